//! The test API server works as the control plane's tests need it to: a namespace and a
//! pod created, the pod's IP set through the status subresource (as a kubelet does), a CRD
//! and an object of it (with its status subresource), a server-side apply in dry-run mode
//! that changes nothing, a watch from a resourceVersion that sees the change, and the
//! objects still there after the API server is restarted.
//!
//! Needs root (like the other control-plane integration tests) and the server built by
//! `controlplane/testapi/build.sh` (the harness runs it; it needs the network the first
//! time). Skipped with a message when either is missing, unless SLUICE_TESTAPI_REQUIRED=1
//! (CI), which makes a server that cannot be built or started a failure.

#[path = "support/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::{ApiServerOptions, TestApiServer};
use serde_json::Value;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: sluicepolicies.sluice.dev}
spec:
  group: sluice.dev
  scope: Namespaced
  names: {plural: sluicepolicies, singular: sluicepolicy, kind: SluicePolicy, shortNames: [spol]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              endpointSelector: {type: object, x-kubernetes-preserve-unknown-fields: true}
              action: {type: string, enum: [allow, deny]}
          status:
            type: object
            properties:
              observedGeneration: {type: integer}
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Starts the server, or explains why the test is skipped (None).
fn start(options: &ApiServerOptions) -> Option<TestApiServer> {
    let required = std::env::var_os("SLUICE_TESTAPI_REQUIRED").is_some_and(|v| v == "1");
    if !is_root() && !required {
        eprintln!("SKIPPED: the API server tests run as root");
        return None;
    }
    let t0 = std::time::Instant::now();
    match TestApiServer::start_with(options) {
        Ok(server) => {
            eprintln!(
                "test API server (etcd + sluice-testapi) ready in {:?}",
                t0.elapsed()
            );
            Some(server)
        }
        Err(e) if !required => {
            eprintln!("SKIPPED: the test API server is not available: {e}");
            None
        }
        Err(e) => panic!("the test API server is required (SLUICE_TESTAPI_REQUIRED=1): {e}"),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A request that must answer `want`; returns the body as JSON.
fn call(
    api: &TestApiServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
    want: u16,
) -> Value {
    let (code, text) = api
        .curl(method, path, content_type, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(code, want, "{method} {path} answered {code}: {text}");
    json(&text)
}

#[test]
fn namespace_pod_status_crd_apply_watch_restart() {
    let Some(mut api) = start(&ApiServerOptions::default()) else {
        return;
    };
    let started = std::time::Instant::now();

    // A namespace (with the label kube-apiserver adds) and a pod bound to a node.
    let ns = call(
        &api,
        "POST",
        "/api/v1/namespaces",
        Some("application/json"),
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}"#),
        201,
    );
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "shop"
    );
    let pod = call(
        &api,
        "POST",
        "/api/v1/namespaces/shop/pods",
        Some("application/json"),
        Some(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},
           "spec":{"nodeName":"node-a","containers":[{"name":"c","image":"nginx:1.27"}]}}"#,
        ),
        201,
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        pod["spec"]["serviceAccountName"], "default",
        "the ServiceAccount default"
    );
    // Objects in a namespace that does not exist are refused (NamespaceLifecycle).
    let (code, _) = api.curl("POST", "/api/v1/namespaces/nowhere/pods", Some("application/json"), Some(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#)).unwrap();
    assert_eq!(code, 404);

    // A watch from the list's resourceVersion, with bookmarks, as kube-rs watchers do.
    let list = call(&api, "GET", "/api/v1/namespaces/shop/pods", None, None, 200);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string();
    let mut watch = api
        .watch(
            &format!(
                "/api/v1/namespaces/shop/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
            ),
            Duration::from_secs(30),
        )
        .unwrap();

    // The kubelet's part: the pod's IPs through the status subresource.
    let patched = call(
        &api,
        "PATCH",
        "/api/v1/namespaces/shop/pods/web/status",
        Some("application/merge-patch+json"),
        Some(r#"{"status":{"phase":"Running","podIP":"10.1.0.7","podIPs":[{"ip":"10.1.0.7"}]}}"#),
        200,
    );
    assert_eq!(patched["status"]["podIP"], "10.1.0.7");
    // Spec changes through /status are ignored; status changes through the main resource too.
    assert_eq!(patched["spec"]["nodeName"], "node-a");
    let event = watch
        .wait_for(&["\"MODIFIED\"", "10.1.0.7"], Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        json(&event)["object"]["status"]["podIPs"][0]["ip"],
        "10.1.0.7"
    );
    // The field selector a node agent uses.
    let mine = call(
        &api,
        "GET",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a",
        None,
        None,
        200,
    );
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));

    // A CRD with a status subresource, established, and an object of it.
    call(
        &api,
        "PATCH",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sluicepolicies.sluice.dev?fieldManager=test",
        Some("application/apply-patch+yaml"),
        Some(CRD),
        201,
    );
    let mut established = false;
    for _ in 0..100 {
        let crd = call(
            &api,
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sluicepolicies.sluice.dev",
            None,
            None,
            200,
        );
        established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(established, "the CRD was not Established within 10 s");
    let policy = r#"apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: deny-web, namespace: shop}
spec: {endpointSelector: {matchLabels: {app: web}}, action: deny}
"#;
    let mut created = None;
    for _ in 0..50 {
        // The custom resource's endpoint appears shortly after Established.
        let (code, text) = api.curl("PATCH", "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/deny-web?fieldManager=test",
            Some("application/apply-patch+yaml"), Some(policy)).unwrap();
        if code == 201 {
            created = Some(json(&text));
            break;
        }
        assert_eq!(code, 404, "applying the SluicePolicy: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = created.expect("the SluicePolicy endpoint did not appear");
    assert_eq!(created["metadata"]["generation"], 1);
    // The schema is enforced.
    let (code, text) = api.curl("PATCH", "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/bad?fieldManager=test",
        Some("application/apply-patch+yaml"),
        Some("apiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: bad, namespace: shop}\nspec: {action: maybe}\n")).unwrap();
    assert_eq!(code, 422, "an enum violation must be refused: {text}");
    let status = call(
        &api,
        "PATCH",
        "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/deny-web/status",
        Some("application/merge-patch+json"),
        Some(r#"{"status":{"observedGeneration":1}}"#),
        200,
    );
    assert_eq!(status["status"]["observedGeneration"], 1);

    // Server-side apply with dryRun=All on a built-in kind and on the custom resource:
    // the answer shows the result, the stored objects do not change.
    let netpol = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
"#;
    let dry = call(
        &api,
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-ingress?fieldManager=test&dryRun=All",
        Some("application/apply-patch+yaml"),
        Some(netpol),
        201,
    );
    assert_eq!(dry["metadata"]["managedFields"][0]["operation"], "Apply");
    call(
        &api,
        "GET",
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-ingress",
        None,
        None,
        404,
    );
    let dry = call(
        &api,
        "PATCH",
        "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/deny-web?fieldManager=test&dryRun=All",
        Some("application/apply-patch+yaml"),
        Some(&policy.replace("action: deny", "action: allow")),
        200,
    );
    assert_eq!(dry["spec"]["action"], "allow");
    let stored = call(
        &api,
        "GET",
        "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/deny-web",
        None,
        None,
        200,
    );
    assert_eq!(stored["spec"]["action"], "deny");
    // And for real.
    call(
        &api,
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-ingress?fieldManager=test",
        Some("application/apply-patch+yaml"),
        Some(netpol),
        201,
    );

    // An outage: the API server stops and starts again on the same port and etcd.
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    drop(watch);
    api.stop().unwrap();
    assert!(
        api.curl("GET", "/api/v1/namespaces", None, None).is_err(),
        "the API server is down"
    );
    let t_restart = std::time::Instant::now();
    api.restart().unwrap();
    eprintln!("API server started again in {:?}", t_restart.elapsed());
    let pod = call(
        &api,
        "GET",
        "/api/v1/namespaces/shop/pods/web",
        None,
        None,
        200,
    );
    assert_eq!(pod["metadata"]["uid"], pod_uid.as_str());
    assert_eq!(pod["status"]["podIP"], "10.1.0.7");
    call(
        &api,
        "GET",
        "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies/deny-web",
        None,
        None,
        200,
    );
    call(
        &api,
        "GET",
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-ingress",
        None,
        None,
        200,
    );

    // A pod bound to a node is deleted gracefully: it stays, with a deletionTimestamp,
    // until the kubelet's part, a delete with gracePeriodSeconds=0.
    let terminating = call(
        &api,
        "DELETE",
        "/api/v1/namespaces/shop/pods/web",
        None,
        None,
        200,
    );
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "{terminating}"
    );
    call(
        &api,
        "DELETE",
        "/api/v1/namespaces/shop/pods/web?gracePeriodSeconds=0",
        None,
        None,
        200,
    );
    call(
        &api,
        "GET",
        "/api/v1/namespaces/shop/pods/web",
        None,
        None,
        404,
    );

    eprintln!(
        "apiserver smoke test passed in {:?} after start (server: {})",
        started.elapsed(),
        api.url()
    );
}

#[test]
fn rbac_mode_enforces_roles() {
    let options = ApiServerOptions {
        rbac: true,
        users: vec![("agent".into(), vec!["sluice-agents".into()])],
        ..Default::default()
    };
    let Some(api) = start(&options) else { return };
    let token = api.token_for("agent").unwrap().to_string();
    let as_agent = |path: &str| -> u16 {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(api.ca_pem_path())
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{}{path}", api.url()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert_eq!(as_agent("/api/v1/pods"), 403, "no role yet");
    assert_eq!(
        as_agent("/version"),
        200,
        "discovery is open to every authenticated user"
    );
    call(
        &api,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        Some("application/yaml"),
        Some(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: pod-reader}\n\
         rules: [{apiGroups: [\"\"], resources: [pods], verbs: [get, list, watch]}]\n",
        ),
        201,
    );
    call(
        &api,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some("application/yaml"),
        Some(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: agents-read-pods}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}\n\
         subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: sluice-agents}]\n",
        ),
        201,
    );
    let mut code = 0;
    for _ in 0..50 {
        code = as_agent("/api/v1/pods");
        if code == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 200, "the binding did not take effect");
    assert_eq!(
        as_agent("/apis/networking.k8s.io/v1/networkpolicies"),
        403,
        "only what the role grants"
    );
}

#[test]
fn serves_inside_a_network_namespace() {
    if !is_root() {
        eprintln!("SKIPPED: the API server tests run as root");
        return;
    }
    // A namespace of this test's own, removed on every exit path.
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let netns = Netns(format!("sluice-tapi-{}", std::process::id()));
    let added = std::process::Command::new("ip")
        .args(["netns", "add", &netns.0])
        .status();
    assert!(added.is_ok_and(|s| s.success()), "ip netns add {}", netns.0);
    let Some(api) = start(&ApiServerOptions {
        netns: Some(netns.0.clone()),
        ..Default::default()
    }) else {
        return;
    };
    call(&api, "GET", "/api/v1/namespaces/default", None, None, 200);
    // Not reachable from the host's loopback.
    let host = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "2", "-k"])
        .arg(format!("{}/readyz", api.url()))
        .status()
        .unwrap();
    assert!(
        !host.success(),
        "the server must listen only inside {}",
        netns.0
    );
    drop(api);
}
