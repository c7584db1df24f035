//! Reading policy manifests: multi-document YAML, dispatch on `apiVersion`/`kind`, and errors
//! that name the policy, the field path and the line.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{PolicyError, PolicyErrorKind, SpecError};
use super::{Policy, PolicyKey, PolicyKind, cilium, k8s};

/// The outcome of reading one YAML document.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedManifest {
    /// A valid policy.
    Policy(Policy),
    /// An empty document (only comments or `---`).
    Empty,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Typed<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    metadata: serde_yaml::Value,
    spec: Option<S>,
    specs: Option<Vec<S>>,
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

/// Splits a multi-document YAML text into (first line number, document text), so callers
/// that read other kinds beside policies can report lines the same way.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    })
}

/// Reads every document of a YAML text. A broken document yields an error and the others
/// still parse.
pub fn parse_manifests(text: &str) -> Vec<Result<ParsedManifest, PolicyError>> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(n, (line, doc))| parse_document(&doc, n + 1, line))
        .collect()
}

/// Reads document number `number` (1-based) of a file, which starts at line `first_line`:
/// errors name those.
pub fn parse_document_at(
    doc: &str,
    number: usize,
    first_line: usize,
) -> Result<ParsedManifest, PolicyError> {
    parse_document(doc, number, first_line)
}

/// Reads a single-document YAML text.
pub fn parse_manifest(text: &str) -> Result<ParsedManifest, PolicyError> {
    parse_document(text, 1, 1)
}

fn yaml_line(err: &serde_yaml::Error, first_line: usize) -> Option<usize> {
    err.location().map(|l| l.line() + first_line - 1)
}

fn parse_document(
    doc: &str,
    number: usize,
    first_line: usize,
) -> Result<ParsedManifest, PolicyError> {
    if is_blank(doc) {
        return Ok(ParsedManifest::Empty);
    }
    let unnamed = format!("document {number}");
    let header: Header = serde_yaml::from_str(doc).map_err(|e| PolicyError {
        policy: unnamed.clone(),
        path: "-".to_owned(),
        line: yaml_line(&e, first_line),
        kind: PolicyErrorKind::Yaml(e.to_string()),
    })?;
    let api_version = header.api_version.unwrap_or_default();
    let kind_name = header.kind.unwrap_or_default();
    let metadata = header.metadata.unwrap_or_default();
    let kind = match (api_version.as_str(), kind_name.as_str()) {
        ("cilium.io/v2", "CiliumNetworkPolicy") => PolicyKind::CiliumNetworkPolicy,
        ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => {
            PolicyKind::CiliumClusterwideNetworkPolicy
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => PolicyKind::NetworkPolicy,
        _ => {
            return Err(PolicyError {
                policy: unnamed,
                path: "-".to_owned(),
                line: Some(first_line),
                kind: PolicyErrorKind::UnsupportedKind {
                    api_version,
                    kind: kind_name,
                },
            });
        }
    };
    let name = metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PolicyError {
            policy: format!("{kind_name} ({unnamed})"),
            path: "metadata.name".to_owned(),
            line: Some(first_line),
            kind: PolicyErrorKind::MissingName,
        })?;
    // Namespaced kinds default to `default`, as `kubectl apply` does.
    let namespace = match kind {
        PolicyKind::CiliumClusterwideNetworkPolicy => None,
        _ => Some(
            metadata
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
        ),
    };
    let key = PolicyKey {
        kind,
        namespace,
        name,
    };
    let label = format!("{kind_name} {key}");
    let fail = |e: SpecError| PolicyError {
        policy: label.clone(),
        path: e.path,
        line: None,
        kind: e.kind,
    };

    let (rules, description) = match kind {
        PolicyKind::NetworkPolicy => {
            let typed: Typed<k8s::NetworkPolicySpec> = typed(doc, first_line, &label)?;
            let spec = typed.spec.ok_or_else(|| fail(missing_spec()))?;
            let ns = key.namespace.as_deref().unwrap_or("default");
            (k8s::translate(&spec, ns).map_err(fail)?, None)
        }
        _ => {
            let typed: Typed<cilium::CiliumPolicySpec> = typed(doc, first_line, &label)?;
            let mut specs: Vec<cilium::CiliumPolicySpec> = typed.spec.into_iter().collect();
            specs.extend(typed.specs.unwrap_or_default());
            if specs.is_empty() {
                return Err(fail(missing_spec()));
            }
            let mut rules = Vec::new();
            let mut description = None;
            for (i, spec) in specs.iter().enumerate() {
                let mut translated =
                    cilium::translate(spec, key.namespace.as_deref()).map_err(|e| {
                        let mut e = fail(e);
                        if i > 0 || specs.len() > 1 {
                            e.path = e.path.replacen("spec", &format!("specs[{i}]"), 1);
                        }
                        e
                    })?;
                rules.append(&mut translated);
                description = description.or_else(|| spec.description.clone());
            }
            (rules, description)
        }
    };
    Ok(ParsedManifest::Policy(Policy {
        key,
        rules,
        description,
    }))
}

fn missing_spec() -> SpecError {
    SpecError {
        path: "spec".to_owned(),
        kind: PolicyErrorKind::Missing,
    }
}

fn typed<S: DeserializeOwned>(
    doc: &str,
    first_line: usize,
    label: &str,
) -> Result<Typed<S>, PolicyError> {
    let de = serde_yaml::Deserializer::from_str(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        PolicyError {
            policy: label.to_owned(),
            path,
            line: yaml_line(&inner, first_line),
            kind: PolicyErrorKind::Schema(inner.to_string()),
        }
    })
}
