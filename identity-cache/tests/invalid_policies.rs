//! Every kind of invalid policy is rejected with an error naming the policy, the field path
//! and the reason; the documents around it still load.

use identity_cache::policy::{
    ParsedManifest, PolicyError, PolicyErrorKind, parse_manifest, parse_manifests,
};

fn cnp(spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: bad, namespace: x}}\nspec:\n{spec}"
    )
}

fn knp(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad, namespace: x}}\nspec:\n{spec}"
    )
}

fn reject(text: &str) -> PolicyError {
    match parse_manifest(text) {
        Err(e) => e,
        Ok(p) => panic!("accepted invalid policy: {p:?}\n{text}"),
    }
}

fn assert_rejected(text: &str, path: &str, check: impl Fn(&PolicyErrorKind) -> bool) {
    let e = reject(text);
    assert_eq!(e.path, path, "error: {e}");
    assert!(check(&e.kind), "unexpected kind: {e}");
    let shown = e.to_string();
    assert!(shown.contains(path), "message names the path: {shown}");
}

#[test]
fn malformed_yaml_reports_a_line() {
    let e = reject("apiVersion: cilium.io/v2\nkind: [unclosed\n");
    assert!(matches!(e.kind, PolicyErrorKind::Yaml(_)));
    assert_eq!(e.line, Some(2));
}

#[test]
fn unsupported_kind_and_missing_name() {
    let e = reject("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    assert!(matches!(e.kind, PolicyErrorKind::UnsupportedKind { .. }));
    let e = reject(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {namespace: x}\nspec: {endpointSelector: {}}\n",
    );
    assert_eq!(e.kind, PolicyErrorKind::MissingName);
}

#[test]
fn missing_selectors() {
    assert_rejected(&cnp("  ingress: [{}]\n"), "spec.endpointSelector", |k| {
        *k == PolicyErrorKind::Missing
    });
    assert_rejected(&knp("  ingress: [{}]\n"), "spec.podSelector", |k| {
        *k == PolicyErrorKind::Missing
    });
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let e = reject(&cnp(
        "  endpointSelector: {}\n  ingress:\n  - fromEndpoint: [{}]\n",
    ));
    assert!(
        matches!(e.kind, PolicyErrorKind::Schema(ref m) if m.contains("fromEndpoint")),
        "{e}"
    );
    assert!(e.path.starts_with("spec.ingress[0]"), "{e}");
    assert!(e.line.is_some());
}

#[test]
fn invalid_selectors() {
    assert_rejected(
        &cnp(
            "  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{matchExpressions: [{key: a, operator: Near, values: [b]}]}]\n",
        ),
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0]",
        |k| matches!(k, PolicyErrorKind::Selector(_)),
    );
    assert_rejected(
        &knp("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n"),
        "spec.podSelector.matchExpressions[0]",
        |k| matches!(k, PolicyErrorKind::Selector(_)),
    );
}

#[test]
fn invalid_cidrs() {
    assert_rejected(
        &cnp("  endpointSelector: {}\n  egress:\n  - toCIDR: [10.0.0.0/33]\n"),
        "spec.egress[0].toCIDR[0]",
        |k| matches!(k, PolicyErrorKind::Cidr { .. }),
    );
    assert_rejected(
        &knp(
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]\n",
        ),
        "spec.egress[0].to[0].ipBlock.except[0]",
        |k| matches!(k, PolicyErrorKind::ExceptOutsideCidr { .. }),
    );
}

#[test]
fn invalid_ports() {
    let ports = |p: &str| {
        cnp(&format!(
            "  endpointSelector: {{}}\n  ingress:\n  - toPorts: [{{ports: [{p}]}}]\n"
        ))
    };
    assert_rejected(
        &ports("{port: \"70000\"}"),
        "spec.ingress[0].toPorts[0].ports[0].port",
        |k| matches!(k, PolicyErrorKind::Port(_)),
    );
    assert_rejected(
        &ports("{port: \"Not_A_Name\"}"),
        "spec.ingress[0].toPorts[0].ports[0].port",
        |k| matches!(k, PolicyErrorKind::Port(_)),
    );
    assert_rejected(
        &ports("{port: \"90\", endPort: 80}"),
        "spec.ingress[0].toPorts[0].ports[0].endPort",
        |k| matches!(k, PolicyErrorKind::EndPort { .. }),
    );
    assert_rejected(
        &ports("{port: http, endPort: 80}"),
        "spec.ingress[0].toPorts[0].ports[0].endPort",
        |k| matches!(k, PolicyErrorKind::EndPort { .. }),
    );
    assert_rejected(
        &ports("{port: \"80\", protocol: GRE}"),
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        |k| matches!(k, PolicyErrorKind::Protocol(_)),
    );
    assert_rejected(
        &knp("  podSelector: {}\n  ingress:\n  - ports: [{port: 80, protocol: ICMP}]\n"),
        "spec.ingress[0].ports[0].protocol",
        |k| matches!(k, PolicyErrorKind::Protocol(_)),
    );
}

#[test]
fn invalid_entities_icmp_and_policy_types() {
    assert_rejected(
        &cnp("  endpointSelector: {}\n  ingress:\n  - fromEntities: [internet]\n"),
        "spec.ingress[0].fromEntities[0]",
        |k| matches!(k, PolicyErrorKind::Entity(_)),
    );
    assert_rejected(
        &cnp(
            "  endpointSelector: {}\n  ingress:\n  - icmps: [{fields: [{type: 8, family: IPv5}]}]\n",
        ),
        "spec.ingress[0].icmps[0].fields[0].family",
        |k| matches!(k, PolicyErrorKind::Icmp(_)),
    );
    assert_rejected(
        &cnp("  endpointSelector: {}\n  ingress:\n  - icmps: [{fields: [{type: 300}]}]\n"),
        "spec.ingress[0].icmps[0].fields[0].type",
        |k| matches!(k, PolicyErrorKind::Icmp(_)),
    );
    assert_rejected(
        &knp("  podSelector: {}\n  policyTypes: [Inbound]\n"),
        "spec.policyTypes[0]",
        |k| matches!(k, PolicyErrorKind::PolicyType(_)),
    );
}

#[test]
fn unsupported_features_are_rejected_not_ignored() {
    assert_rejected(
        &cnp("  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n"),
        "spec.egress[0].toFQDNs",
        |k| matches!(k, PolicyErrorKind::Unsupported(_)),
    );
    assert_rejected(
        &knp(
            "  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
        ),
        "spec.ingress[0].from[0]",
        |k| *k == PolicyErrorKind::IpBlockWithSelector,
    );
}

#[test]
fn a_broken_document_does_not_stop_the_others() {
    let text = format!(
        "{}---\n{}---\n# only a comment\n",
        cnp("  endpointSelector: {}\n  ingress:\n  - fromEntities: [nowhere]\n"),
        knp("  podSelector: {}\n")
    );
    let results = parse_manifests(&text);
    assert_eq!(results.len(), 3);
    assert!(results[0].is_err());
    assert!(matches!(results[1], Ok(ParsedManifest::Policy(_))));
    assert!(matches!(results[2], Ok(ParsedManifest::Empty)));
}
