//! The standalone source: a directory of YAML files holding endpoints, namespaces and
//! policies (multi-document files allowed), watched for changes.
//!
//! ```yaml
//! apiVersion: sluice.dev/v1alpha1
//! kind: Endpoint
//! metadata: {name: api-5d8, namespace: shop, labels: {app: backend}}
//! spec:
//!   interface: lxc-backend          # host side of the pod's veth
//!   ips: [10.0.2.2]
//!   mac: "02:00:00:00:02:02"        # the pod side's MAC
//!   serviceAccount: api             # optional
//!   ports: [{name: http, port: 8080, protocol: TCP}]   # optional named ports
//!   mode: enforce                   # enforce | audit | kernel (optional)
//! ---
//! apiVersion: v1
//! kind: Namespace
//! metadata: {name: shop, labels: {team: web}}
//! ---
//! # CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy as usual
//! ```
//!
//! A file is applied as a whole: if any of its documents is wrong, the file is reported (file,
//! line, field, reason) and what the agent had accepted from its previous version stays in
//! force. An object defined by two files is taken from the first (by path) and the second is
//! reported.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use identity_cache::endpoint::NamedPort;
use identity_cache::policy::{ParsedManifest, Policy, parse_document_at, split_documents};
use identity_cache::protocol::Protocol;
use serde::Deserialize;

use super::{Desired, EndpointMode, EndpointSpec};
use crate::api::Rejection;

/// The API version of sluice's own standalone kinds.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortDoc {
    name: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointSpecDoc {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    ports: Vec<PortDoc>,
    #[serde(default)]
    mode: EndpointMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Meta,
    spec: EndpointSpecDoc,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceDoc {
    metadata: Meta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// What one file holds.
#[derive(Clone, Debug, Default)]
struct FileObjects {
    endpoints: Vec<EndpointSpec>,
    namespaces: Vec<(String, BTreeMap<String, String>)>,
    policies: Vec<Policy>,
}

#[derive(Clone, Debug, Default)]
struct FileState {
    content: String,
    /// The objects of the last version that parsed.
    accepted: Option<FileObjects>,
    /// Why the current version was refused.
    rejected: Vec<Rejection>,
}

/// A directory of YAML state files.
pub struct DirectorySource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    dir_error: Option<Rejection>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn deserialize<T: for<'de> Deserialize<'de>>(
    doc: &str,
    first_line: usize,
) -> Result<T, (Option<usize>, String)> {
    let de = serde_yaml::Deserializer::from_str(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e.inner().location().map(|l| l.line() + first_line - 1);
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        (line, format!("{path}: {message}"))
    })
}

type FieldError = (Option<usize>, String);

/// Checks an endpoint's attachment fields.
fn attachment(
    iface: String,
    ips_text: &[String],
    mac_text: &str,
    at: &impl Fn(&str, String) -> FieldError,
) -> Result<(String, Vec<IpAddr>, [u8; 6]), FieldError> {
    if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
        return Err(at(
            "spec.interface",
            format!("{iface:?} is not an interface name (1-15 characters, no '/')"),
        ));
    }
    let mut ips = Vec::new();
    for (i, ip) in ips_text.iter().enumerate() {
        let parsed: IpAddr = ip.parse().map_err(|_| {
            at(
                &format!("spec.ips[{i}]"),
                format!("{ip:?} is not an IP address"),
            )
        })?;
        ips.push(parsed);
    }
    if ips.is_empty() {
        return Err(at(
            "spec.ips",
            "an endpoint needs at least one address".into(),
        ));
    }
    let mac = parse_mac(mac_text).ok_or_else(|| {
        at(
            "spec.mac",
            format!("{mac_text:?} is not a MAC address like 02:00:00:00:00:01"),
        )
    })?;
    Ok((iface, ips, mac))
}

fn endpoint_from(doc: EndpointDoc, line: usize) -> Result<EndpointSpec, (Option<usize>, String)> {
    let at = |field: &str, why: String| (Some(line), format!("{field}: {why}"));
    let meta = doc.metadata;
    let namespace = meta.namespace.unwrap_or_else(|| "default".into());
    if meta.name.is_empty() {
        return Err(at("metadata.name", "is required".into()));
    }
    // Without interface, addresses and MAC the endpoint waits for the CNI plugin to say
    // where the pod is attached.
    let (iface, ips, mac) = match (doc.spec.interface, doc.spec.ips, doc.spec.mac) {
        (None, None, None) => (String::new(), Vec::new(), [0u8; 6]),
        (Some(iface), Some(ips), Some(mac)) => attachment(iface, &ips, &mac, &at)?,
        _ => {
            return Err(at(
                "spec",
                "interface, ips and mac go together (or leave all three to the CNI plugin)".into(),
            ));
        }
    };
    let mut ports = Vec::new();
    for (i, p) in doc.spec.ports.into_iter().enumerate() {
        let protocol: Protocol = p
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .parse()
            .map_err(|e| at(&format!("spec.ports[{i}].protocol"), format!("{e}")))?;
        ports.push(NamedPort {
            name: p.name,
            port: p.port,
            protocol,
        });
    }
    let uid = meta
        .uid
        .unwrap_or_else(|| format!("file:{namespace}/{}", meta.name));
    Ok(EndpointSpec {
        namespace,
        name: meta.name,
        uid,
        labels: meta.labels,
        service_account: doc.spec.service_account.unwrap_or_else(|| "default".into()),
        interface: iface,
        ips,
        mac,
        ports,
        mode: doc.spec.mode,
        init: false,
    })
}

/// Parses one file's text; every problem found, with its line.
fn parse_file(text: &str, origin: &str) -> Result<FileObjects, Vec<Rejection>> {
    let mut objects = FileObjects::default();
    let mut problems = Vec::new();
    let reject = |line: Option<usize>, reason: String| Rejection {
        origin: origin.to_owned(),
        line,
        reason,
    };
    for (number, (first_line, doc)) in split_documents(text).into_iter().enumerate() {
        let header = match serde_yaml::from_str::<Option<Header>>(&doc) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                let line = e.location().map(|l| l.line() + first_line - 1);
                problems.push(reject(line, format!("invalid YAML: {e}")));
                continue;
            }
        };
        match (header.api_version.as_deref(), header.kind.as_deref()) {
            (Some(API_VERSION), Some("Endpoint")) => {
                match deserialize::<EndpointDoc>(&doc, first_line)
                    .and_then(|d| endpoint_from(d, first_line))
                {
                    Ok(e) => objects.endpoints.push(e),
                    Err((line, why)) => problems.push(reject(line, format!("Endpoint: {why}"))),
                }
            }
            (Some("v1"), Some("Namespace")) => {
                match deserialize::<NamespaceDoc>(&doc, first_line) {
                    Ok(ns) => objects
                        .namespaces
                        .push((ns.metadata.name, ns.metadata.labels)),
                    Err((line, why)) => problems.push(reject(line, format!("Namespace: {why}"))),
                }
            }
            _ => match parse_document_at(&doc, number + 1, first_line) {
                Ok(ParsedManifest::Policy(p)) => objects.policies.push(p),
                Ok(ParsedManifest::Empty) => {}
                Err(e) => problems.push(reject(e.line, e.to_string())),
            },
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

/// Why the directory could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The directory is missing or unreadable.
    #[error("cannot read the state directory {path}: {source}")]
    Directory {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// File watching could not be set up (the periodic rescan still works).
    #[error("cannot watch {path} for changes: {reason}")]
    Watch {
        /// Directory.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

impl DirectorySource {
    /// A source reading `dir` (nothing is read until [`scan`](Self::scan)).
    pub fn new(dir: &Path) -> Self {
        DirectorySource {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            dir_error: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory's `*.yaml`/`*.yml` files. Returns whether anything changed.
    /// An unreadable directory is reported in [`desired`](Self::desired) and keeps the
    /// objects read before.
    pub fn scan(&mut self) -> bool {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(source) => {
                let error = SourceError::Directory {
                    path: self.dir.clone(),
                    source,
                };
                let rejection = Rejection {
                    origin: self.dir.display().to_string(),
                    line: None,
                    reason: error.to_string(),
                };
                let changed = self.dir_error.as_ref() != Some(&rejection);
                self.dir_error = Some(rejection);
                return changed;
            }
        };
        let mut changed = self.dir_error.take().is_some();
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let yaml = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml");
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !yaml || hidden || !path.is_file() {
                continue;
            }
            let Ok(content) = std::fs::read_to_string(&path) else {
                continue;
            };
            seen.push(path.clone());
            let state = self.files.entry(path.clone()).or_default();
            if state.content == content && (state.accepted.is_some() || !state.rejected.is_empty())
            {
                continue;
            }
            changed = true;
            state.content = content;
            match parse_file(&state.content, &path.display().to_string()) {
                Ok(objects) => {
                    state.accepted = Some(objects);
                    state.rejected.clear();
                }
                Err(problems) => state.rejected = problems,
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed | (self.files.len() != before)
    }

    /// The union of every file's accepted objects, and everything refused.
    pub fn desired(&self) -> Desired {
        let mut d = Desired::default();
        d.rejected.extend(self.dir_error.clone());
        for (path, state) in &self.files {
            let origin = path.display().to_string();
            for r in &state.rejected {
                let mut r = r.clone();
                if state.accepted.is_some() {
                    r.reason
                        .push_str(" (the file's previous version stays in force)");
                }
                d.rejected.push(r);
            }
            let Some(objects) = &state.accepted else {
                continue;
            };
            let mut duplicate = |what: String, first: Option<&String>| {
                d.rejected.push(Rejection {
                    origin: origin.clone(),
                    line: None,
                    reason: format!(
                        "{what} is already defined in {}; this definition is ignored",
                        first.map_or("another file", |s| s.as_str())
                    ),
                });
            };
            for e in &objects.endpoints {
                let key = (e.namespace.clone(), e.name.clone());
                let id = format!("Endpoint {}/{}", e.namespace, e.name);
                if d.endpoints.contains_key(&key) || d.awaiting_cni.contains_key(&key) {
                    let first = d.origins.get(&id).cloned();
                    duplicate(id, first.as_ref());
                    continue;
                }
                d.origins.insert(id, origin.clone());
                if e.interface.is_empty() {
                    d.awaiting_cni.insert(key, e.clone());
                } else {
                    d.endpoints.insert(key, e.clone());
                }
            }
            for (name, labels) in &objects.namespaces {
                let id = format!("Namespace {name}");
                if d.namespaces.contains_key(name) {
                    let first = d.origins.get(&id).cloned();
                    duplicate(id, first.as_ref());
                    continue;
                }
                d.origins.insert(id, origin.clone());
                d.namespaces.insert(name.clone(), labels.clone());
            }
            for p in &objects.policies {
                let id = format!("{:?} {}", p.key.kind, p.key);
                if d.policies.contains_key(&p.key) {
                    let first = d.origins.get(&id).cloned();
                    duplicate(id, first.as_ref());
                    continue;
                }
                d.origins.insert(id, origin.clone());
                d.policies.insert(p.key.clone(), p.clone());
            }
        }
        d
    }

    /// Starts watching the directory; each change sends `()` on the returned channel. Keep
    /// the watcher alive as long as events are wanted.
    pub fn watch(
        &self,
    ) -> Result<(notify::RecommendedWatcher, crossbeam::channel::Receiver<()>), SourceError> {
        use notify::Watcher;
        let (tx, rx) = crossbeam::channel::bounded(1);
        let mut watcher = notify::recommended_watcher(move |_event| {
            let _ = tx.try_send(());
        })
        .map_err(|e| SourceError::Watch {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| SourceError::Watch {
                path: self.dir.clone(),
                reason: e.to_string(),
            })?;
        Ok((watcher, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {name: api, namespace: shop, labels: {app: backend}}
spec:
  interface: lxc-api
  ips: [10.0.2.2]
  mac: \"02:00:00:00:02:02\"
  ports: [{name: http, port: 8080}]
";

    const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {app: frontend}}]}]
";

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sluice-src-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    #[test]
    fn endpoints_namespaces_and_policies_are_read_from_multi_document_files() {
        let dir = temp("read");
        let text = format!(
            "{ENDPOINT}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{team: web}}}}\n---\n{POLICY}"
        );
        std::fs::write(dir.0.join("shop.yaml"), text).expect("write");
        let mut src = DirectorySource::new(&dir.0);
        assert!(src.scan());
        let d = src.desired();
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        let ep = &d.endpoints[&("shop".into(), "api".into())];
        assert_eq!(ep.interface, "lxc-api");
        assert_eq!(ep.mac, [2, 0, 0, 0, 2, 2]);
        assert_eq!(ep.ports[0].protocol, Protocol::Tcp);
        assert_eq!(d.namespaces["shop"]["team"], "web");
        assert_eq!(d.policies.len(), 1);
        assert!(!src.scan(), "nothing changed");
    }

    #[test]
    fn a_broken_file_is_reported_with_line_and_field_and_its_previous_version_stays() {
        let dir = temp("broken");
        let file = dir.0.join("p.yaml");
        std::fs::write(&file, format!("{ENDPOINT}---\n{POLICY}")).expect("write");
        let mut src = DirectorySource::new(&dir.0);
        src.scan();
        let broken = POLICY.replace("ingress: [{fromEndpoints", "ingress: [{fromEndpointz");
        std::fs::write(&file, format!("{ENDPOINT}---\n{broken}")).expect("write");
        assert!(src.scan());
        let d = src.desired();
        assert_eq!(d.policies.len(), 1, "the previous policy stays");
        assert_eq!(d.endpoints.len(), 1);
        let r = &d.rejected[0];
        assert!(r.reason.contains("fromEndpointz"), "{r:?}");
        assert_eq!(r.line, Some(15), "{r:?}");
        assert!(r.origin.ends_with("p.yaml"));

        let bad_ip = ENDPOINT.replace("10.0.2.2", "10.0.2");
        std::fs::write(dir.0.join("q.yaml"), bad_ip).expect("write");
        src.scan();
        let d = src.desired();
        assert!(
            d.rejected
                .iter()
                .any(|r| r.reason.contains("spec.ips[0]") && r.line.is_some()),
            "{:?}",
            d.rejected
        );
    }

    #[test]
    fn removing_a_file_removes_its_objects_and_duplicates_are_refused() {
        let dir = temp("dupes");
        std::fs::write(dir.0.join("a.yaml"), POLICY).expect("write");
        std::fs::write(dir.0.join("b.yaml"), POLICY).expect("write");
        let mut src = DirectorySource::new(&dir.0);
        src.scan();
        let d = src.desired();
        assert_eq!(d.policies.len(), 1);
        assert!(
            d.rejected[0].reason.contains("already defined in"),
            "{:?}",
            d.rejected
        );
        std::fs::remove_file(dir.0.join("a.yaml")).expect("rm");
        std::fs::remove_file(dir.0.join("b.yaml")).expect("rm");
        assert!(src.scan());
        assert!(src.desired().policies.is_empty());
    }

    #[test]
    fn a_missing_directory_is_reported_not_fatal() {
        let mut src = DirectorySource::new(Path::new("/nonexistent/sluice-state"));
        src.scan();
        let d = src.desired();
        assert!(d.rejected[0].reason.contains("/nonexistent/sluice-state"));
    }
}
