//! The manifests in `deploy/` are valid Kubernetes objects: every document of every
//! `deploy/*.yaml` passes a server-side apply with `dryRun=All` and `fieldValidation=Strict`
//! against the test API server (`controlplane/testapi`, Kubernetes' own API machinery),
//! which answers with the object as it would be stored (the manifest's fields all kept), and
//! nothing is persisted. Broken copies of the DaemonSet (a container without an image, a
//! misspelt field, a selector that does not match the template) are refused with the
//! server's message, so a broken manifest cannot pass.
//!
//! Needs the server built by `controlplane/testapi/build.sh` (the harness runs it; the
//! first time it needs the network); no root. Skipped with a message when the server is not
//! available, unless SLUICE_TESTAPI_REQUIRED=1 (CI), which makes that a failure.

#[path = "support/apiserver.rs"]
mod apiserver;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use apiserver::TestApiServer;
use serde_json::{Value, json};

const FIELD_MANAGER: &str = "sluice-test";
/// The query of every apply: kubectl's `apply --server-side --dry-run=server
/// --validate=strict`.
const DRY_RUN: &str = "fieldManager=sluice-test&dryRun=All&fieldValidation=Strict";

/// Starts the server, or explains why the test is skipped (None).
fn start() -> Option<TestApiServer> {
    let required = std::env::var_os("SLUICE_TESTAPI_REQUIRED").is_some_and(|v| v == "1");
    let t0 = Instant::now();
    match TestApiServer::start() {
        Ok(server) => {
            eprintln!("test API server ready in {:?}", t0.elapsed());
            Some(server)
        }
        Err(e) if !required => {
            eprintln!("SKIPPED: the test API server is not available: {e}");
            None
        }
        Err(e) => panic!("the test API server is required (SLUICE_TESTAPI_REQUIRED=1): {e}"),
    }
}

/// One YAML document of a file in deploy/.
struct Manifest {
    /// `daemonset.yaml#1` (documents counted from 1).
    origin: String,
    /// The document as written (what is sent).
    text: String,
    /// The document parsed.
    obj: Value,
}

impl Manifest {
    fn str_field(&self, pointer: &str) -> &str {
        self.obj
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no {pointer}", self.origin))
    }
    fn api_version(&self) -> &str {
        self.str_field("/apiVersion")
    }
    fn kind(&self) -> &str {
        self.str_field("/kind")
    }
    fn name(&self) -> &str {
        self.str_field("/metadata/name")
    }
    fn describe(&self) -> String {
        format!("{} ({} {})", self.origin, self.kind(), self.name())
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Splits a multi-document YAML text the way Kubernetes' YAML reader does: a line that
/// starts with `---` (then nothing, or a comment) separates documents.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if rest.is_empty() || rest.starts_with('#') {
                docs.push(String::new());
                continue;
            }
        }
        let doc = docs.last_mut().expect("at least one document");
        doc.push_str(line);
        doc.push('\n');
    }
    docs
}

/// Every document of every deploy/*.yaml, in file name order (comment-only documents left
/// out).
fn manifests() -> Vec<Manifest> {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().expect("file name").to_string_lossy();
        let text =
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (i, doc) in split_documents(&text).into_iter().enumerate() {
            let origin = format!("{name}#{}", i + 1);
            let obj: Value = serde_yaml::from_str(&doc)
                .unwrap_or_else(|e| panic!("{origin}: not YAML: {e}\n{doc}"));
            if obj.is_null() {
                continue;
            }
            let m = Manifest {
                origin,
                text: doc,
                obj,
            };
            // Every document names its kind and itself.
            let _ = (m.api_version(), m.kind(), m.name());
            out.push(m);
        }
    }
    out
}

/// A request; returns the status and the body as JSON (panics if either is not there).
fn call(
    api: &TestApiServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (code, text) = api
        .curl(method, path, content_type, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path} answered {code}, not JSON ({e}): {text}"));
    (code, value)
}

/// Where the objects of one kind live, from the server's discovery.
struct Resource {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    base: String,
    plural: String,
    namespaced: bool,
}

/// Resolves kinds to resources through discovery (one request per apiVersion).
#[derive(Default)]
struct Discovery {
    lists: HashMap<String, Value>,
}

impl Discovery {
    fn resource(&mut self, api: &TestApiServer, m: &Manifest) -> Resource {
        let api_version = m.api_version();
        let base = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let list = self
            .lists
            .entry(api_version.to_string())
            .or_insert_with(|| {
                let (code, list) = call(api, "GET", &base, None, None);
                assert_eq!(
                    code,
                    200,
                    "{}: apiVersion {api_version} is not served by the test API server: {list}",
                    m.describe()
                );
                list
            });
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["kind"] == m.kind() && r["name"].as_str().is_some_and(|n| !n.contains('/')))
            .unwrap_or_else(|| {
                panic!(
                    "{}: kind {} is not served in {api_version} by the test API server (see controlplane/testapi/README.md)",
                    m.describe(),
                    m.kind()
                )
            });
        Resource {
            base,
            plural: found["name"].as_str().expect("resource name").to_string(),
            namespaced: found["namespaced"] == true,
        }
    }
}

/// The namespace a document goes to: its own, or `default` (as kubectl does) if the kind is
/// namespaced; None for cluster-scoped kinds.
fn namespace_of(m: &Manifest, r: &Resource) -> Option<String> {
    r.namespaced.then(|| {
        m.obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string()
    })
}

fn object_path(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}/namespaces/{ns}/{}/{name}", r.base, r.plural),
        None => format!("{}/{}/{name}", r.base, r.plural),
    }
}

/// Checks that every field of `want` is in `got` with the same value (lists element by
/// element); `got` may have more (defaults, metadata the server adds).
fn contains(want: &Value, got: &Value, at: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().try_for_each(|(k, v)| {
            let at = format!("{at}.{k}");
            match g.get(k) {
                Some(gv) => contains(v, gv, &at),
                None => Err(format!("{at} is missing from the server's answer")),
            }
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (wv, gv))| contains(wv, gv, &format!("{at}[{i}]"))),
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => Ok(()),
        _ if want == got => Ok(()),
        _ => Err(format!("{at}: sent {want}, the server answered {got}")),
    }
}

/// Whether a manifest sets fields that server-side apply tracks (anything but apiVersion,
/// kind, metadata.name and metadata.namespace).
fn sets_fields(obj: &Value) -> bool {
    let Some(top) = obj.as_object() else {
        return false;
    };
    top.iter().any(|(k, v)| match k.as_str() {
        "apiVersion" | "kind" => false,
        "metadata" => v
            .as_object()
            .is_some_and(|meta| meta.keys().any(|k| k != "name" && k != "namespace")),
        _ => true,
    })
}

/// A server-side apply of `body` (YAML or JSON) in dry-run mode with strict field
/// validation.
fn dry_apply(api: &TestApiServer, path: &str, body: &str) -> (u16, Value) {
    call(
        api,
        "PATCH",
        &format!("{path}?{DRY_RUN}"),
        Some("application/apply-patch+yaml"),
        Some(body),
    )
}

/// The message of a refusal, after checking that it is one (a Status with one of the
/// `codes`).
fn refusal(what: &str, (code, status): (u16, Value), codes: &[u16]) -> String {
    assert!(
        codes.contains(&code),
        "{what}: expected a refusal with status {codes:?}, got {code}: {status}"
    );
    assert_eq!(status["kind"], "Status", "{what}: {status}");
    assert_eq!(status["status"], "Failure", "{what}: {status}");
    assert_eq!(status["code"], code, "{what}: {status}");
    status["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no message: {status}"))
        .to_string()
}

#[test]
fn deploy_manifests_pass_a_server_side_dry_run_apply() {
    let manifests = manifests();
    let kinds: Vec<&str> = manifests.iter().map(Manifest::kind).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ] {
        assert!(
            kinds.contains(&kind),
            "deploy/ has no {kind} any more: update this test ({kinds:?})"
        );
    }
    let Some(api) = start() else { return };
    let started = Instant::now();
    let mut discovery = Discovery::default();
    let resolved: Vec<(Resource, Option<String>)> = manifests
        .iter()
        .map(|m| {
            let r = discovery.resource(&api, m);
            let ns = namespace_of(m, &r);
            (r, ns)
        })
        .collect();

    // The namespaces the manifests go to exist (kube-system does already); an apply into a
    // missing one would be refused by NamespaceLifecycle.
    let mut namespaces: Vec<&str> = resolved
        .iter()
        .filter_map(|(_, ns)| ns.as_deref())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let (code, body) = call(&api, "GET", &format!("/api/v1/namespaces/{ns}"), None, None);
        if code == 404 {
            let (code, body) = call(
                &api,
                "POST",
                "/api/v1/namespaces",
                Some("application/json"),
                Some(
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                        .to_string(),
                ),
            );
            assert_eq!(code, 201, "creating namespace {ns}: {body}");
        } else {
            assert_eq!(code, 200, "GET namespace {ns}: {body}");
        }
    }

    let mut answers = Vec::with_capacity(manifests.len());
    for (m, (r, ns)) in manifests.iter().zip(&resolved) {
        let what = m.describe();
        let path = object_path(r, ns.as_deref(), m.name());
        let (code, before) = call(&api, "GET", &path, None, None);
        assert!(
            code == 200 || code == 404,
            "{what}: GET {path} answered {code}: {before}"
        );
        let existed = code == 200;

        let (code, answer) = dry_apply(&api, &path, &m.text);
        assert_eq!(
            code,
            if existed { 200 } else { 201 },
            "{what}: the server-side dry-run apply was refused: {answer}"
        );
        assert_eq!(answer["kind"], m.kind(), "{what}: {answer}");
        assert_eq!(answer["metadata"]["name"], m.name(), "{what}: {answer}");
        if let Some(ns) = ns {
            assert_eq!(
                answer["metadata"]["namespace"],
                ns.as_str(),
                "{what}: {answer}"
            );
        }
        // The field manager owns what it set (the server records no entry for a manifest
        // with nothing but its name: identity fields are not tracked).
        if sets_fields(&m.obj) {
            let managers = answer["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                managers
                    .iter()
                    .any(|f| f["manager"] == FIELD_MANAGER && f["operation"] == "Apply"),
                "{what}: no Apply entry of {FIELD_MANAGER} in managedFields: {answer}"
            );
        }
        // Every field of the manifest is understood and kept (none dropped or pruned).
        if let Err(e) = contains(&m.obj, &answer, "") {
            panic!("{what}: {e}");
        }

        // Nothing persisted.
        let (code, after) = call(&api, "GET", &path, None, None);
        if existed {
            assert_eq!(code, 200, "{what}: {after}");
            assert_eq!(
                after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
                "{what}: the dry run changed the stored object"
            );
        } else {
            assert_eq!(
                code, 404,
                "{what}: the dry run persisted the object: {after}"
            );
        }
        eprintln!("{what}: dry-run apply accepted");
        answers.push(answer);
    }

    // The DaemonSet got kube-apiserver's defaults.
    let (ds_index, ds) = manifests
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind() == "DaemonSet")
        .expect("a DaemonSet");
    let (ds_resource, ds_ns) = &resolved[ds_index];
    let ds_path = object_path(ds_resource, ds_ns.as_deref(), ds.name());
    let answer = &answers[ds_index];
    assert_eq!(answer["spec"]["revisionHistoryLimit"], 10, "{answer}");
    assert_eq!(
        answer["spec"]["template"]["spec"]["restartPolicy"], "Always",
        "{answer}"
    );
    assert_eq!(answer["metadata"]["generation"], 1, "{answer}");

    // Broken copies of the DaemonSet are refused, with a message naming the field.
    let broken = |edit: &dyn Fn(&mut Value)| -> String {
        let mut obj = ds.obj.clone();
        edit(&mut obj);
        obj.to_string()
    };
    let no_image = broken(&|o| {
        o["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .expect("a container")
            .remove("image");
    });
    let message = refusal(
        "a container without an image",
        dry_apply(&api, &ds_path, &no_image),
        &[422],
    );
    assert!(
        message.contains("spec.template.spec.containers[0].image: Required value"),
        "{message}"
    );

    // A field the schema does not declare fails the apply's typed conversion. Kubernetes
    // answers that with 500 today (kubernetes/kubernetes#122480, #139253 proposes 400); the
    // test server runs the same code, so either is accepted, the message is what matters.
    let misspelt = broken(&|o| o["spec"]["template"]["spec"]["hostNetwrok"] = json!(true));
    let message = refusal(
        "a misspelt field",
        dry_apply(&api, &ds_path, &misspelt),
        &[400, 500],
    );
    assert!(message.contains("hostNetwrok"), "{message}");
    assert!(
        message.contains("field not declared in schema"),
        "{message}"
    );

    let unmatched = broken(&|o| {
        o["spec"]["selector"] = json!({"matchLabels": {"app.kubernetes.io/name": "other"}});
    });
    let message = refusal(
        "a selector that misses the template",
        dry_apply(&api, &ds_path, &unmatched),
        &[422],
    );
    assert!(
        message.contains("spec.template.metadata.labels") && message.contains("does not match"),
        "{message}"
    );
    let (code, body) = call(&api, "GET", &ds_path, None, None);
    assert_eq!(code, 404, "a refused dry run left an object: {body}");

    eprintln!(
        "{} documents of deploy/*.yaml validated in {:?}",
        manifests.len(),
        started.elapsed()
    );
}

/// DaemonSets are served as kube-apiserver serves them: short name `ds`, a status
/// subresource that alone writes status, and an immutable selector.
#[test]
fn daemonsets_are_served_with_status_and_an_immutable_selector() {
    let Some(api) = start() else { return };
    let (code, apps) = call(&api, "GET", "/apis/apps/v1", None, None);
    assert_eq!(code, 200, "{apps}");
    let resources = apps["resources"].as_array().expect("resources");
    let ds = resources
        .iter()
        .find(|r| r["name"] == "daemonsets")
        .unwrap_or_else(|| panic!("no daemonsets in apps/v1: {apps}"));
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["namespaced"], true);
    assert_eq!(ds["shortNames"], json!(["ds"]));
    assert!(
        resources.iter().any(|r| r["name"] == "daemonsets/status"),
        "no daemonsets/status: {apps}"
    );

    // Two selectors that both match the template's labels.
    let manifest = |selector: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: probe, namespace: default}}\n\
             spec:\n  selector: {{matchLabels: {selector}}}\n  template:\n    \
             metadata: {{labels: {{app: probe, role: agent}}}}\n    spec:\n      \
             containers: [{{name: c, image: 'busybox:1.37'}}]\n"
        )
    };
    let path = "/apis/apps/v1/namespaces/default/daemonsets/probe";
    let apply = |body: &str| {
        call(
            &api,
            "PATCH",
            &format!("{path}?fieldManager={FIELD_MANAGER}"),
            Some("application/apply-patch+yaml"),
            Some(body),
        )
    };
    let (code, created) = apply(&manifest("{app: probe}"));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(
        created["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );

    // The controller's part: status through /status; spec changes there are ignored.
    let (code, status) = call(
        &api,
        "PATCH",
        &format!("{path}/status"),
        Some("application/merge-patch+json"),
        Some(
            r#"{"spec":{"minReadySeconds":9},"status":{"desiredNumberScheduled":3,"numberReady":2,"observedGeneration":1}}"#,
        ),
    );
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["status"]["numberReady"], 2);
    assert!(
        status["spec"].get("minReadySeconds").is_none_or(|v| v == 0),
        "{status}"
    );
    // And status changes through the main resource are ignored.
    let (code, merged) = call(
        &api,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        Some(r#"{"status":{"numberReady":0}}"#),
    );
    assert_eq!(code, 200, "{merged}");
    assert_eq!(merged["status"]["numberReady"], 2);

    let message = refusal(
        "a changed selector",
        apply(&manifest("{app: probe, role: agent}")),
        &[422],
    );
    assert!(
        message.contains("spec.selector") && message.contains("field is immutable"),
        "{message}"
    );

    let (code, body) = call(&api, "DELETE", path, None, None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&api, "GET", path, None, None);
    assert_eq!(code, 404, "{body}");
}
