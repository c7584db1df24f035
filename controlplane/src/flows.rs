//! Flows as operators see them: a decided packet with both ends named (namespace, pod, labels,
//! identity), the verdict, the drop reason and the policy rule that decided it, in the manner
//! of `hubble observe`; the agent's bounded buffer of recent flows; and the filters
//! `sluice observe` applies.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One end of a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEndpoint {
    /// Address.
    pub ip: String,
    /// TCP/UDP/SCTP port (0 for ICMP).
    pub port: u16,
    /// Security identity.
    pub identity: u64,
    /// Namespace of the pod, when the address is a known pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The identity's labels (`source:key=value`), or the reserved identity's name.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl FlowEndpoint {
    /// `namespace/pod`, else the address.
    pub fn display_name(&self) -> String {
        match (&self.namespace, &self.pod) {
            (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
            _ => self.ip.clone(),
        }
    }

    /// Whether the endpoint carries label `selector` (`key=value` or `source:key=value`;
    /// `key` alone matches any value; comma-separated parts must all match).
    pub fn has_labels(&self, selector: &str) -> bool {
        selector
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .all(|part| self.labels.iter().any(|l| label_matches(l, part)))
    }
}

/// `label` is `source:key=value` (or a reserved name like `reserved:world`); `want` is
/// `key=value`, `key`, or the same with a source prefix.
fn label_matches(label: &str, want: &str) -> bool {
    if label == want {
        return true;
    }
    let bare = label.split_once(':').map_or(label, |(_, rest)| rest);
    if bare == want {
        return true;
    }
    let key = bare.split_once('=').map_or(bare, |(k, _)| k);
    !want.contains('=') && !want.contains(':') && key == want
}

/// The deciding rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`, `NetworkPolicy`.
    pub kind: String,
    /// Namespace (empty for cluster-wide policies).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `ingress`, `egress`, `ingressDeny`, `egressDeny`, or `policyTypes` for the rule that
    /// made an endpoint default-deny.
    pub section: String,
    /// Index of the rule within its section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        match self.index {
            Some(i) if self.section == "ingress" || self.section == "egress" => {
                write!(f, "{scope}[{i}]")
            }
            Some(i) => write!(f, "{scope}[{}:{i}]", self.section),
            None => write!(f, "{scope}[{}]", self.section),
        }
    }
}

/// One decided flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// `FORWARDED`, `DROPPED` or `AUDIT`.
    pub verdict: String,
    /// Drop reason name (`POLICY_DENIED`, …), also for AUDIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// Sender.
    pub source: FlowEndpoint,
    /// Receiver.
    pub destination: FlowEndpoint,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, or the protocol number.
    pub protocol: String,
    /// TCP flags (`SYN`, `SYN,ACK`, …) when TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// ICMP type, when ICMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// `ingress` or `egress`: the direction that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_direction: Option<String>,
    /// The deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// How specific the deciding match was (`L3_L4`, `L4_ONLY`, …, `NONE`).
    pub match_type: String,
    /// Allowed as a reply of a tracked connection.
    pub is_reply: bool,
    /// `fastpath` or `kernel`.
    pub observation_point: String,
    /// Interface the packet arrived on.
    pub interface: String,
    /// Worker index (fast path only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
    /// CPU core of the worker (fast path only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<u16>,
    /// Processing latency in nanoseconds (fast path only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u32>,
    /// Why it was reported: `new-flow`, `drop`, `verdict-changed`, `untracked`.
    pub event: String,
}

/// What `sluice observe` asks for. Repeating a flag ORs its values; different flags AND.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Source carries these labels (`key=value[,key=value]`).
    #[serde(default)]
    pub from_label: Vec<String>,
    /// Destination carries these labels.
    #[serde(default)]
    pub to_label: Vec<String>,
    /// Source pod (`namespace/name`, or `name` in any namespace; a trailing `*` matches a
    /// prefix).
    #[serde(default)]
    pub from_pod: Vec<String>,
    /// Destination pod.
    #[serde(default)]
    pub to_pod: Vec<String>,
    /// Either end is in one of these namespaces.
    #[serde(default)]
    pub namespace: Vec<String>,
    /// Source identity.
    #[serde(default)]
    pub from_identity: Vec<u64>,
    /// Destination identity.
    #[serde(default)]
    pub to_identity: Vec<u64>,
    /// Verdict (`FORWARDED`, `DROPPED`, `AUDIT`; case-insensitive).
    #[serde(default)]
    pub verdict: Vec<String>,
    /// Drop reason name (case-insensitive; `POLICY_DENIED` or `policy-denied`).
    #[serde(default)]
    pub drop_reason: Vec<String>,
    /// Protocol name (case-insensitive).
    #[serde(default)]
    pub protocol: Vec<String>,
    /// Either end's port.
    #[serde(default)]
    pub port: Vec<u16>,
    /// Only flows at or after this time (ns since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<u64>,
}

fn pod_matches(end: &FlowEndpoint, want: &str) -> bool {
    let Some(pod) = &end.pod else {
        return false;
    };
    let (ns, name) = match want.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, want),
    };
    if ns.is_some_and(|ns| end.namespace.as_deref() != Some(ns)) {
        return false;
    }
    match name.strip_suffix('*') {
        Some(prefix) => pod.starts_with(prefix),
        None => pod == name,
    }
}

fn canonical_reason(s: &str) -> String {
    s.trim().to_ascii_uppercase().replace('-', "_")
}

fn any_or_empty<T>(wanted: &[T], f: impl Fn(&T) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(f)
}

impl FlowFilter {
    /// Whether `flow` passes every given criterion.
    pub fn matches(&self, flow: &FlowRecord) -> bool {
        let (src, dst) = (&flow.source, &flow.destination);
        any_or_empty(&self.from_label, |l| src.has_labels(l))
            && any_or_empty(&self.to_label, |l| dst.has_labels(l))
            && any_or_empty(&self.from_pod, |p| pod_matches(src, p))
            && any_or_empty(&self.to_pod, |p| pod_matches(dst, p))
            && any_or_empty(&self.namespace, |ns| {
                src.namespace.as_deref() == Some(ns) || dst.namespace.as_deref() == Some(ns)
            })
            && any_or_empty(&self.from_identity, |id| src.identity == *id)
            && any_or_empty(&self.to_identity, |id| dst.identity == *id)
            && any_or_empty(&self.verdict, |v| v.eq_ignore_ascii_case(&flow.verdict))
            && any_or_empty(&self.drop_reason, |r| {
                flow.drop_reason
                    .as_deref()
                    .is_some_and(|have| canonical_reason(have) == canonical_reason(r))
            })
            && any_or_empty(&self.protocol, |p| p.eq_ignore_ascii_case(&flow.protocol))
            && any_or_empty(&self.port, |p| src.port == *p || dst.port == *p)
            && self.since_ns.is_none_or(|t| flow.time_ns >= t)
    }

    /// Checks the values a user typed; names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        const VERDICTS: [&str; 3] = ["FORWARDED", "DROPPED", "AUDIT"];
        for v in &self.verdict {
            if !VERDICTS.iter().any(|k| k.eq_ignore_ascii_case(v)) {
                return Err(format!(
                    "unknown verdict {v:?} (expected FORWARDED, DROPPED or AUDIT)"
                ));
            }
        }
        for r in &self.drop_reason {
            let known = identity_cache::verdict::DropReason::ALL
                .iter()
                .any(|k| k.name() == canonical_reason(r));
            if !known {
                let names: Vec<&str> = identity_cache::verdict::DropReason::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect();
                return Err(format!(
                    "unknown drop reason {r:?} (expected one of {})",
                    names.join(", ")
                ));
            }
        }
        for p in &self.protocol {
            if p.parse::<identity_cache::protocol::Protocol>().is_err() {
                return Err(format!(
                    "unknown protocol {p:?} (expected TCP, UDP, SCTP, ICMP or ICMPv6)"
                ));
            }
        }
        for l in self.from_label.iter().chain(&self.to_label) {
            if l.split(',').any(|part| part.trim().is_empty()) {
                return Err(format!("empty label in selector {l:?}"));
            }
        }
        Ok(())
    }
}

/// The agent's memory of recent flows: the last `capacity` records, with a count of those
/// pushed out and of events lost before they reached it.
#[derive(Debug)]
pub struct FlowBuffer {
    records: VecDeque<FlowRecord>,
    capacity: usize,
    total: u64,
    evicted: u64,
    lost: u64,
}

impl FlowBuffer {
    /// A buffer of at most `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        FlowBuffer {
            records: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            total: 0,
            evicted: 0,
            lost: 0,
        }
    }

    /// Adds a flow, evicting the oldest when full.
    pub fn push(&mut self, record: FlowRecord) {
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.evicted += 1;
        }
        self.records.push_back(record);
        self.total += 1;
    }

    /// Sets the number of events lost upstream (worker queues, kernel ring buffer).
    pub fn set_lost(&mut self, lost: u64) {
        self.lost = lost;
    }

    /// The last `n` flows matching `filter`, oldest first.
    pub fn last(&self, filter: &FlowFilter, n: usize) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .records
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Flows held now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// (flows seen, evicted from the buffer, lost before reaching it).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.total, self.evicted, self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src_app: &str, dst_app: &str, port: u16, verdict: &str) -> FlowRecord {
        FlowRecord {
            time_ns: 100,
            verdict: verdict.into(),
            drop_reason: (verdict == "DROPPED").then(|| "POLICY_DENIED".into()),
            source: FlowEndpoint {
                ip: "10.0.0.1".into(),
                port: 40000,
                identity: 1000,
                namespace: Some("shop".into()),
                pod: Some(format!("{src_app}-7c9")),
                labels: vec![format!("k8s:app={src_app}"), "k8s:tier=web".into()],
            },
            destination: FlowEndpoint {
                ip: "10.0.0.2".into(),
                port,
                identity: 2000,
                namespace: Some("shop".into()),
                pod: Some(format!("{dst_app}-5d8")),
                labels: vec![format!("k8s:app={dst_app}")],
            },
            protocol: "TCP".into(),
            match_type: "L3_L4".into(),
            observation_point: "fastpath".into(),
            event: "new-flow".into(),
            ..FlowRecord::default()
        }
    }

    #[test]
    fn filters_select_exactly_the_flows_asked_for() {
        let a = flow("frontend", "backend", 8080, "FORWARDED");
        let b = flow("intruder", "backend", 8080, "DROPPED");
        let c = flow("frontend", "backend", 9090, "DROPPED");
        let pick = |f: FlowFilter| -> Vec<u16> {
            [&a, &b, &c]
                .into_iter()
                .enumerate()
                .filter(|(_, r)| f.matches(r))
                .map(|(i, _)| i as u16)
                .collect()
        };
        let by_label = FlowFilter {
            from_label: vec!["app=frontend".into()],
            ..FlowFilter::default()
        };
        assert_eq!(pick(by_label), vec![0, 2]);
        let and = FlowFilter {
            from_label: vec!["app=frontend,tier=web".into()],
            verdict: vec!["dropped".into()],
            ..FlowFilter::default()
        };
        assert_eq!(pick(and), vec![2]);
        let or = FlowFilter {
            from_pod: vec!["shop/intruder-7c9".into(), "frontend*".into()],
            port: vec![8080],
            ..FlowFilter::default()
        };
        assert_eq!(pick(or), vec![0, 1]);
        let reason = FlowFilter {
            drop_reason: vec!["policy-denied".into()],
            ..FlowFilter::default()
        };
        assert_eq!(pick(reason), vec![1, 2]);
        let key_only = FlowFilter {
            to_label: vec!["k8s:app".into()],
            namespace: vec!["other".into()],
            ..FlowFilter::default()
        };
        assert_eq!(pick(key_only), Vec::<u16>::new());
    }

    #[test]
    fn bad_filter_values_are_named() {
        let f = FlowFilter {
            verdict: vec!["ALLOWED".into()],
            ..FlowFilter::default()
        };
        assert!(f.validate().unwrap_err().contains("ALLOWED"));
        let f = FlowFilter {
            drop_reason: vec!["too-cold".into()],
            ..FlowFilter::default()
        };
        assert!(f.validate().unwrap_err().contains("POLICY_DENIED"));
        let f = FlowFilter {
            protocol: vec!["GRE".into()],
            ..FlowFilter::default()
        };
        assert!(f.validate().unwrap_err().contains("GRE"));
    }

    #[test]
    fn the_buffer_keeps_the_newest_and_counts_the_rest() {
        let mut buf = FlowBuffer::new(2);
        for port in [1, 2, 3] {
            buf.push(flow("a", "b", port, "FORWARDED"));
        }
        let ports: Vec<u16> = buf
            .last(&FlowFilter::default(), 10)
            .iter()
            .map(|f| f.destination.port)
            .collect();
        assert_eq!(ports, vec![2, 3]);
        assert_eq!(buf.counts(), (3, 1, 0));
    }
}
