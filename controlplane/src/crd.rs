//! sluice's own policy kinds: `SluicePolicy` (namespaced) and `SluiceClusterPolicy`, in the
//! API group `sluice.dev`. Their `spec` is the CiliumNetworkPolicy spec, so a user's CNP YAML
//! moves over by changing `apiVersion`/`kind` (`sluice policy import` does it). The API server
//! stores the spec as it is (`x-kubernetes-preserve-unknown-fields`); the agent validates it
//! with the same parser as every other policy and reports the outcome in the object's status
//! (condition `Accepted`: `True`, or `False` with the field path and reason).
//!
//! `deploy/crds.yaml` is generated from these types ([`crd_yaml`]; `sluice crds` prints it)
//! and a test keeps the checked-in file equal to it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group.
pub const GROUP: &str = "sluice.dev";
/// The served version.
pub const VERSION: &str = "v1alpha1";

/// A CiliumNetworkPolicy `spec`, kept as written (validated by the agent, not the API server).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRules(pub BTreeMap<String, Value>);

impl JsonSchema for PolicyRules {
    fn schema_name() -> Cow<'static, str> {
        "PolicyRules".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "The CiliumNetworkPolicy spec (endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, description); the sluice agent validates it and reports the result in status.conditions.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// A status condition, as Kubernetes conventions define it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// A CamelCase reason (`Valid`, `InvalidPolicy`).
    pub reason: String,
    /// Human-readable detail: the field path and why, when rejected.
    pub message: String,
    /// The `metadata.generation` the condition describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

/// The status the agent writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    /// Conditions (`Accepted`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// `SluicePolicy`: a namespaced policy with the CiliumNetworkPolicy spec.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "SluicePolicy",
    plural = "sluicepolicies",
    shortname = "slp",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
pub struct SluicePolicySpec {
    /// The rules.
    #[serde(flatten)]
    pub rules: PolicyRules,
}

/// `SluiceClusterPolicy`: a cluster-wide policy with the CiliumClusterwideNetworkPolicy spec.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "SluiceClusterPolicy",
    plural = "sluiceclusterpolicies",
    shortname = "slcp",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
pub struct SluiceClusterPolicySpec {
    /// The rules.
    #[serde(flatten)]
    pub rules: PolicyRules,
}

/// The CRDs of both kinds as one multi-document YAML text (what `deploy/crds.yaml` holds).
pub fn crd_yaml() -> String {
    let header = "# Generated from controlplane/src/crd.rs by `sluice crds`; do not edit.\n";
    let docs: Vec<String> = [SluicePolicy::crd(), SluiceClusterPolicy::crd()]
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD serializes"))
        .collect();
    format!("{header}{}", docs.join("---\n"))
}

/// Converts CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy YAML documents to the
/// equivalent SluicePolicy / SluiceClusterPolicy documents (`sluice policy import`). Other
/// documents are passed through unchanged; comments outside documents are kept.
pub fn import(text: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for (line, doc) in identity_cache::policy::split_documents(text) {
        let value: Value = match serde_yaml::from_str::<Option<Value>>(&doc) {
            Ok(Some(v)) => v,
            Ok(None) => {
                out.push(doc);
                continue;
            }
            Err(e) => return Err(format!("document at line {line}: {e}")),
        };
        let kind = match (value["apiVersion"].as_str(), value["kind"].as_str()) {
            (Some("cilium.io/v2"), Some("CiliumNetworkPolicy")) => "SluicePolicy",
            (Some("cilium.io/v2"), Some("CiliumClusterwideNetworkPolicy")) => "SluiceClusterPolicy",
            _ => {
                out.push(doc);
                continue;
            }
        };
        let mut converted = value.clone();
        converted["apiVersion"] = Value::String(format!("{GROUP}/{VERSION}"));
        converted["kind"] = Value::String(kind.into());
        if let Some(meta) = converted["metadata"].as_object_mut() {
            for server_field in [
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "managedFields",
            ] {
                meta.remove(server_field);
            }
        }
        if let Some(obj) = converted.as_object_mut() {
            obj.remove("status");
        }
        out.push(serde_yaml::to_string(&converted).map_err(|e| e.to_string())?);
    }
    Ok(out.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_crds_are_the_generated_ones() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == crd_yaml(),
            "deploy/crds.yaml is out of date: run `cargo run -p controlplane --bin sluice -- crds > deploy/crds.yaml`"
        );
    }

    #[test]
    fn a_cnp_moves_over_by_changing_kind_and_its_rules_parse_the_same() {
        let cnp = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow, namespace: shop, resourceVersion: \"7\"}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {app: frontend}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: keep, namespace: shop}
spec: {podSelector: {}}
";
        let out = import(cnp).expect("import");
        let docs: Vec<Value> = identity_cache::policy::split_documents(&out)
            .into_iter()
            .filter_map(|(_, d)| serde_yaml::from_str(&d).ok())
            .collect();
        assert_eq!(docs[0]["kind"], "SluicePolicy");
        assert_eq!(docs[0]["apiVersion"], "sluice.dev/v1alpha1");
        assert!(docs[0]["metadata"].get("resourceVersion").is_none());
        assert_eq!(docs[1]["kind"], "NetworkPolicy");
        let object: SluicePolicy = serde_json::from_value(docs[0].clone()).expect("a SluicePolicy");
        assert!(object.spec.rules.0.contains_key("endpointSelector"));
    }
}
