//! Labels and canonical label sets: what a workload *is*, as policy selectors see it.
//!
//! The keys are Cilium's, so that existing CiliumNetworkPolicy YAML selects the same pods:
//! `k8s:io.kubernetes.pod.namespace`, `k8s:io.cilium.k8s.policy.serviceaccount`,
//! `k8s:io.cilium.k8s.policy.cluster`, `k8s:io.cilium.k8s.namespace.labels.<key>` and the
//! pod's own labels (minus the noise labels that would give every pod its own identity).

use std::collections::BTreeMap;
use std::fmt;

/// Label key carrying the pod's namespace.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label key carrying the pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
/// Label key carrying the cluster name.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
/// Prefix of the label keys that copy the namespace's own labels onto its pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// Where a label comes from (Cilium's source prefix, `k8s:` in `k8s:app=web`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelSource {
    /// Derived from Kubernetes objects (pod, namespace, service account).
    K8s,
    /// A reserved identity's label (`reserved:world`, `reserved:host`, …).
    Reserved,
    /// A CIDR identity's label (`cidr:10.0.0.0/8`).
    Cidr,
    /// Labels given without a source (standalone YAML endpoints).
    Unspec,
}

impl LabelSource {
    /// The prefix spelling (`k8s`, `reserved`, `cidr`, `unspec`).
    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::K8s => "k8s",
            LabelSource::Reserved => "reserved",
            LabelSource::Cidr => "cidr",
            LabelSource::Unspec => "unspec",
        }
    }

    /// Parses a source prefix; `any` is a selector-only wildcard and yields `None`.
    pub fn parse(prefix: &str) -> Option<Option<LabelSource>> {
        match prefix {
            "k8s" => Some(Some(LabelSource::K8s)),
            "reserved" => Some(Some(LabelSource::Reserved)),
            "cidr" => Some(Some(LabelSource::Cidr)),
            "unspec" => Some(Some(LabelSource::Unspec)),
            "any" => Some(None),
            _ => None,
        }
    }
}

/// One label: source, key and value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The key, without source prefix.
    pub key: String,
    /// Where the label comes from.
    pub source: LabelSource,
    /// The value (may be empty).
    pub value: String,
}

impl Label {
    /// A label from its parts.
    pub fn new(source: LabelSource, key: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            key: key.into(),
            source,
            value: value.into(),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.source.as_str(), self.key, self.value)
    }
}

/// A canonical label set: sorted by key then source, at most one label per (key, source).
///
/// Two sets with the same labels compare equal and hash to the same identity on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet {
    labels: Vec<Label>,
}

impl LabelSet {
    /// Builds a canonical set; for a repeated (key, source) the last value wins.
    pub fn new(labels: impl IntoIterator<Item = Label>) -> Self {
        let mut labels: Vec<Label> = labels.into_iter().collect();
        // Stable sort keeps input order among equal (key, source) so "last wins" holds.
        labels.sort_by(|a, b| (&a.key, a.source).cmp(&(&b.key, b.source)));
        let mut out: Vec<Label> = Vec::with_capacity(labels.len());
        for label in labels {
            match out.last_mut() {
                Some(prev) if prev.key == label.key && prev.source == label.source => *prev = label,
                _ => out.push(label),
            }
        }
        LabelSet { labels: out }
    }

    /// The labels in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.labels.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels with `key`, from any source (at most one per source).
    pub fn with_key<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Label> + use<'a> {
        // Two binary searches bound the run of labels with this key; no allocation.
        let start = self.labels.partition_point(|l| l.key.as_str() < key);
        let end = self.labels.partition_point(|l| l.key.as_str() <= key);
        self.labels[start..end].iter()
    }

    /// The value of `key` from `source` (`None` source: any source).
    pub fn get(&self, source: Option<LabelSource>, key: &str) -> Option<&str> {
        self.with_key(key)
            .find(|l| source.is_none_or(|s| s == l.source))
            .map(|l| l.value.as_str())
    }

    /// Whether a label `source:key` is present (`None`: any source).
    pub fn has(&self, source: Option<LabelSource>, key: &str) -> bool {
        self.get(source, key).is_some()
    }

    /// The bytes an identity is derived from: `source:key=value` entries, NUL-separated.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.labels.len() * 32);
        for label in &self.labels {
            out.extend_from_slice(label.source.as_str().as_bytes());
            out.push(b':');
            out.extend_from_slice(label.key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(label.value.as_bytes());
            out.push(0);
        }
        out
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, label) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{label}")?;
        }
        Ok(())
    }
}

/// Which pod labels are left out of identities because they differ between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFilter {
    /// Keys dropped exactly.
    pub excluded_keys: Vec<String>,
    /// Keys dropped when they start with one of these.
    pub excluded_prefixes: Vec<String>,
}

impl Default for LabelFilter {
    /// The noise labels that Kubernetes controllers stamp on every replica.
    fn default() -> Self {
        LabelFilter {
            excluded_keys: [
                "pod-template-hash",
                "controller-revision-hash",
                "pod-template-generation",
                "statefulset.kubernetes.io/pod-name",
                "apps.kubernetes.io/pod-index",
                "batch.kubernetes.io/job-completion-index",
                "job-completion-index",
                "batch.kubernetes.io/controller-uid",
                "controller-uid",
            ]
            .map(String::from)
            .to_vec(),
            excluded_prefixes: vec!["annotation.".to_owned()],
        }
    }
}

impl LabelFilter {
    /// Whether a pod label with `key` takes part in identities.
    pub fn keeps(&self, key: &str) -> bool {
        !self.excluded_keys.iter().any(|k| k == key)
            && !self
                .excluded_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
    }
}

/// What is known about a workload, from which its label set is derived.
#[derive(Clone, Debug, Default)]
pub struct WorkloadMeta<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's own labels.
    pub pod_labels: Option<&'a BTreeMap<String, String>>,
    /// The namespace's labels.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The pod's service account (`default` when unset in Kubernetes).
    pub service_account: Option<&'a str>,
    /// The cluster name.
    pub cluster: Option<&'a str>,
}

/// The canonical label set of a workload: namespace, service account, cluster, namespace
/// labels and the pod labels that `filter` keeps, all with source `k8s`.
pub fn workload_labels(meta: &WorkloadMeta<'_>, filter: &LabelFilter) -> LabelSet {
    let mut labels = vec![Label::new(
        LabelSource::K8s,
        NAMESPACE_LABEL,
        meta.namespace,
    )];
    if let Some(sa) = meta.service_account {
        labels.push(Label::new(LabelSource::K8s, SERVICE_ACCOUNT_LABEL, sa));
    }
    if let Some(cluster) = meta.cluster {
        labels.push(Label::new(LabelSource::K8s, CLUSTER_LABEL, cluster));
    }
    // Kubernetes sets `kubernetes.io/metadata.name` on every namespace; NetworkPolicies
    // select namespaces by it, so it is present even when the caller's labels lack it.
    labels.push(Label::new(
        LabelSource::K8s,
        format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
        meta.namespace,
    ));
    for (k, v) in meta.namespace_labels.into_iter().flatten() {
        labels.push(Label::new(
            LabelSource::K8s,
            format!("{NAMESPACE_LABELS_PREFIX}{k}"),
            v,
        ));
    }
    for (k, v) in meta.pod_labels.into_iter().flatten() {
        if filter.keeps(k) {
            labels.push(Label::new(LabelSource::K8s, k, v));
        }
    }
    LabelSet::new(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonical_order_ignores_input_order() {
        let a = LabelSet::new([
            Label::new(LabelSource::K8s, "b", "2"),
            Label::new(LabelSource::K8s, "a", "1"),
        ]);
        let b = LabelSet::new([
            Label::new(LabelSource::K8s, "a", "1"),
            Label::new(LabelSource::K8s, "b", "2"),
        ]);
        assert_eq!(a, b);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.to_string(), "k8s:a=1,k8s:b=2");
    }

    #[test]
    fn repeated_key_keeps_last_value() {
        let set = LabelSet::new([
            Label::new(LabelSource::K8s, "app", "old"),
            Label::new(LabelSource::K8s, "app", "new"),
        ]);
        assert_eq!(set.len(), 1);
        assert_eq!(set.get(None, "app"), Some("new"));
    }

    #[test]
    fn workload_labels_drop_noise_and_carry_namespace_context() {
        let pod = map(&[
            ("app", "web"),
            ("pod-template-hash", "7c9d"),
            ("tier", "front"),
        ]);
        let ns = map(&[("team", "shop")]);
        let set = workload_labels(
            &WorkloadMeta {
                namespace: "prod",
                pod_labels: Some(&pod),
                namespace_labels: Some(&ns),
                service_account: Some("web-sa"),
                cluster: Some("default"),
            },
            &LabelFilter::default(),
        );
        assert_eq!(
            set.get(Some(LabelSource::K8s), NAMESPACE_LABEL),
            Some("prod")
        );
        assert_eq!(set.get(None, SERVICE_ACCOUNT_LABEL), Some("web-sa"));
        assert_eq!(set.get(None, CLUSTER_LABEL), Some("default"));
        assert_eq!(
            set.get(None, "io.cilium.k8s.namespace.labels.team"),
            Some("shop")
        );
        assert!(!set.has(None, "pod-template-hash"));
        assert_eq!(set.get(None, "tier"), Some("front"));
    }

    #[test]
    fn replicas_differing_only_in_noise_share_a_label_set() {
        let filter = LabelFilter::default();
        let a = map(&[
            ("app", "db"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
        ]);
        let b = map(&[
            ("app", "db"),
            ("statefulset.kubernetes.io/pod-name", "db-1"),
        ]);
        let meta = |labels| WorkloadMeta {
            namespace: "x",
            pod_labels: Some(labels),
            ..WorkloadMeta::default()
        };
        assert_eq!(
            workload_labels(&meta(&a), &filter),
            workload_labels(&meta(&b), &filter)
        );
    }
}
