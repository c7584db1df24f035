//! The CLI end to end (parsing, dispatch, output, exit codes) against a fake agent: a Unix
//! listener in a temporary directory that reads one request per connection and answers
//! with canned lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, Parser};

use super::format::{FLOW_TABLE_HEADERS, flow_compact, flow_json, flow_row};
use super::observe::{Since, parse_since};
use super::trace::{PortProtocol, parse_port};
use super::{Cli, Command, run};
use crate::api::{
    EndpointStatus, IdentityEntry, MapStatus, PolicyStatus, Rejection, Request, Response,
    StatusReport, TraceDirection, TraceRequest, TraceResult, WorkerStatus,
};
use crate::flows::{FlowEndpoint, FlowFilter, FlowRecord, PolicyRef};
use identity_cache::protocol::Protocol;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "sluice-cli-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Answers one connection per conversation: reads a request line, writes the responses,
/// hangs up. `raw` lines are written verbatim after them (for broken answers).
struct FakeAgent {
    dir: TempDir,
    socket: PathBuf,
    thread: JoinHandle<Vec<Request>>,
}

impl FakeAgent {
    fn start(name: &str, conversations: Vec<Vec<Response>>) -> Self {
        let dir = TempDir::new(name);
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for responses in conversations {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("read request");
                requests.push(serde_json::from_str(&line).expect("request parses"));
                let mut writer = stream;
                for r in responses {
                    let mut line = serde_json::to_vec(&r).expect("serialize");
                    line.push(b'\n');
                    // The client may hang up early (an error it detected): not our failure.
                    if writer.write_all(&line).is_err() {
                        break;
                    }
                }
            }
            requests
        });
        FakeAgent {
            dir,
            socket,
            thread,
        }
    }

    fn socket(&self) -> &str {
        self.socket.to_str().expect("utf-8 path")
    }

    /// The requests it received (waits for every conversation).
    fn requests(self) -> Vec<Request> {
        let requests = self.thread.join().expect("fake agent thread");
        drop(self.dir);
        requests
    }
}

/// Parses `args` as `sluice ARGS…` and runs it: (exit status, stdout, stderr).
fn sluice(args: &[&str]) -> (u8, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(cli, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).expect("utf-8 stdout"),
        String::from_utf8(err).expect("utf-8 stderr"),
    )
}

const NOV_28: u64 = 1_732_763_521_123_456_789; // 2024-11-28T03:12:01.123456789Z
const WEB: u64 = 0x1a2b_3c4d_5e6f_7081;
const API: u64 = 0x3c4d_5e6f_7081_9203;

fn pod(ns: &str, name: &str, ip: &str, port: u16, identity: u64, app: &str) -> FlowEndpoint {
    FlowEndpoint {
        ip: ip.into(),
        port,
        identity,
        namespace: Some(ns.into()),
        pod: Some(name.into()),
        labels: vec![format!("k8s:app={app}")],
    }
}

fn forwarded() -> FlowRecord {
    FlowRecord {
        time_ns: NOV_28,
        verdict: "FORWARDED".into(),
        source: pod("shop", "web-7c9", "10.0.0.1", 40312, WEB, "frontend"),
        destination: pod("shop", "api-5d8", "10.0.0.2", 8080, API, "backend"),
        protocol: "TCP".into(),
        tcp_flags: Some("SYN".into()),
        traffic_direction: Some("ingress".into()),
        policy: Some(PolicyRef {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "shop".into(),
            name: "allow-frontend".into(),
            section: "ingress".into(),
            index: Some(0),
        }),
        match_type: "L3_L4".into(),
        observation_point: "fastpath".into(),
        interface: "lxc1".into(),
        worker: Some(0),
        core: Some(1),
        latency_ns: Some(900),
        event: "new-flow".into(),
        ..FlowRecord::default()
    }
}

fn dropped() -> FlowRecord {
    FlowRecord {
        verdict: "DROPPED".into(),
        drop_reason: Some("POLICY_DENIED".into()),
        source: pod(
            "shop",
            "intruder-1",
            "10.0.0.9",
            50000,
            0x9999_0000_0000_0001,
            "x",
        ),
        policy: Some(PolicyRef {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "shop".into(),
            name: "api-policy".into(),
            section: "policyTypes".into(),
            index: None,
        }),
        match_type: "NONE".into(),
        event: "drop".into(),
        ..forwarded()
    }
}

fn status_report() -> StatusReport {
    StatusReport {
        version: "0.1.0".into(),
        uptime_s: 3725,
        source: "directory /etc/sluice/state".into(),
        last_sync_age_s: 1.25,
        datapath: "fastpath".into(),
        fallback_active: true,
        endpoints: vec![
            EndpointStatus {
                namespace: "shop".into(),
                name: "web-7c9".into(),
                identity: WEB,
                ips: vec!["10.0.0.1".into()],
                interface: "lxc1".into(),
                mode: "enforce".into(),
                ingress_enforced: false,
                egress_enforced: true,
                datapath: "fastpath".into(),
            },
            EndpointStatus {
                namespace: "shop".into(),
                name: "api-5d8".into(),
                identity: API,
                ips: vec!["10.0.0.2".into()],
                interface: "lxc2".into(),
                mode: "enforce".into(),
                ingress_enforced: true,
                egress_enforced: false,
                datapath: "kernel".into(),
            },
        ],
        policies: vec![PolicyStatus {
            kind: "CiliumNetworkPolicy".into(),
            namespace: "shop".into(),
            name: "allow-frontend".into(),
            origin: "/etc/sluice/state/policies.yaml".into(),
        }],
        rejected: vec![Rejection {
            origin: "/etc/sluice/state/bad.yaml".into(),
            line: Some(12),
            reason: "spec.ingress[0].fromEndpoints[0]: unknown field `matchLabel`".into(),
        }],
        workers: vec![WorkerStatus {
            index: 0,
            core: Some(1),
            state: "down: stalled for 2s".into(),
            restarts: 1,
            ports: vec!["lxc2/0".into()],
            pps: 1_234_567.4,
            p50_us: 1.04,
            p99_us: 7.5,
            packets: [10, 2, 0],
            ..WorkerStatus::default()
        }],
        maps: vec![
            MapStatus {
                name: "sluice_ipcache".into(),
                entries: 950,
                capacity: 1000,
            },
            MapStatus {
                name: "sluice_policy".into(),
                entries: 10,
                capacity: 1000,
            },
        ],
        identities: 12,
        flows: (1234, 5, 0),
    }
}

fn trace_result() -> TraceResult {
    let rule = PolicyRef {
        kind: "CiliumNetworkPolicy".into(),
        namespace: "shop".into(),
        name: "deny-intruder".into(),
        section: "ingressDeny".into(),
        index: Some(0),
    };
    TraceResult {
        from_identity: WEB,
        from_labels: vec!["k8s:app=frontend".into()],
        to_identity: API,
        to_labels: vec!["k8s:app=backend".into()],
        verdict: "DROPPED".into(),
        drop_reason: Some("POLICY_DENY_RULE".into()),
        deciding_direction: Some("ingress".into()),
        rule: Some(rule.clone()),
        egress: Some(TraceDirection {
            direction: "egress".into(),
            action: "ALLOW".into(),
            enforced: false,
            rule: None,
            match_type: "NONE".into(),
            drop_reason: None,
        }),
        ingress: Some(TraceDirection {
            direction: "ingress".into(),
            action: "DENY".into(),
            enforced: true,
            rule: Some(rule),
            match_type: "L3_ONLY".into(),
            drop_reason: Some("POLICY_DENY_RULE".into()),
        }),
    }
}

// ---------------------------------------------------------------- rendering

#[test]
fn compact_lines_read_like_hubble() {
    let f = forwarded();
    assert_eq!(
        flow_compact(&f, false),
        "Nov 28 03:12:01.123: shop/web-7c9:40312 (id 1a2b3c4d) -> shop/api-5d8:8080 \
         (id 3c4d5e6f) TCP SYN FORWARDED"
    );
    assert_eq!(
        flow_compact(&f, true),
        "Nov 28 03:12:01.123: shop/web-7c9:40312 (id 1a2b3c4d) -> shop/api-5d8:8080 \
         (id 3c4d5e6f) TCP SYN FORWARDED by shop/allow-frontend[0]"
    );
    // Drops always name the rule.
    assert_eq!(
        flow_compact(&dropped(), false),
        "Nov 28 03:12:01.123: shop/intruder-1:50000 (id 99990000) -> shop/api-5d8:8080 \
         (id 3c4d5e6f) TCP SYN DROPPED (POLICY_DENIED) by shop/api-policy[policyTypes]"
    );
    let audit = FlowRecord {
        verdict: "AUDIT".into(),
        drop_reason: Some("POLICY_DENY_RULE".into()),
        policy: Some(PolicyRef {
            kind: "CiliumClusterwideNetworkPolicy".into(),
            namespace: String::new(),
            name: "deny-all".into(),
            section: "ingressDeny".into(),
            index: Some(2),
        }),
        ..forwarded()
    };
    assert!(
        flow_compact(&audit, false)
            .ends_with("TCP SYN AUDIT (would drop: POLICY_DENY_RULE) by deny-all[ingressDeny:2]"),
        "{}",
        flow_compact(&audit, false)
    );
    let reply = FlowRecord {
        source: forwarded().destination,
        destination: forwarded().source,
        tcp_flags: Some("SYN,ACK".into()),
        is_reply: true,
        observation_point: "kernel".into(),
        policy: None,
        ..forwarded()
    };
    assert_eq!(
        flow_compact(&reply, true),
        "Nov 28 03:12:01.123: shop/api-5d8:8080 (id 3c4d5e6f) -> shop/web-7c9:40312 \
         (id 1a2b3c4d) TCP SYN,ACK reply FORWARDED [kernel]"
    );
    let world = FlowRecord {
        source: FlowEndpoint {
            ip: "2001:db8::7".into(),
            port: 443,
            identity: 10,
            labels: vec!["reserved:world-ipv6".into(), "reserved:world".into()],
            ..FlowEndpoint::default()
        },
        protocol: "UDP".into(),
        tcp_flags: None,
        ..forwarded()
    };
    assert!(
        flow_compact(&world, false)
            .starts_with("Nov 28 03:12:01.123: [2001:db8::7]:443 (id world-ipv6) -> "),
        "{}",
        flow_compact(&world, false)
    );
    let ping = FlowRecord {
        protocol: "ICMP".into(),
        tcp_flags: None,
        icmp_type: Some(8),
        ..forwarded()
    };
    assert!(
        flow_compact(&ping, false).contains(
            "shop/web-7c9 (id 1a2b3c4d) -> shop/api-5d8 (id 3c4d5e6f) ICMP echo-request FORWARDED"
        ),
        "{}",
        flow_compact(&ping, false)
    );
}

#[test]
fn json_lines_are_the_serde_form() {
    for f in [forwarded(), dropped()] {
        let line = flow_json(&f);
        assert!(!line.contains('\n'));
        let back: FlowRecord = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, f);
        assert_eq!(line, serde_json::to_string(&f).expect("serializes"));
    }
}

#[test]
fn tables_have_the_documented_columns() {
    assert_eq!(
        FLOW_TABLE_HEADERS,
        [
            "TIME",
            "SOURCE",
            "DESTINATION",
            "PROTO",
            "VERDICT",
            "REASON",
            "POLICY"
        ]
    );
    let row = flow_row(&dropped());
    assert_eq!(
        row,
        [
            "Nov 28 03:12:01.123",
            "shop/intruder-1:50000",
            "shop/api-5d8:8080",
            "TCP SYN",
            "DROPPED",
            "POLICY_DENIED",
            "shop/api-policy[policyTypes]"
        ]
    );
}

#[test]
fn status_text_names_rejections_pressure_and_fallback() {
    let text = super::status::render(&status_report());
    for want in [
        "up 1h 2m 5s",
        "last sync 1.2s ago",
        "kernel fallback ACTIVE for 1 endpoint(s): shop/api-5d8",
        "/etc/sluice/state/bad.yaml:12: spec.ingress[0].fromEndpoints[0]: unknown field `matchLabel`",
        "95.0% (nearly full)",
        "1.0%",
        "1,234,567",
        "down: stalled for 2s",
        "1,234 seen, 5 evicted from the buffer, 0 lost",
        "shop/allow-frontend",
        "1a2b3c4d5e6f7081",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Columns line up: every endpoint row starts its IDENTITY cell at the header's offset.
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.contains("ENDPOINT"))
        .expect("endpoint header");
    let col = header.find("IDENTITY").expect("identity column");
    let row = lines
        .iter()
        .find(|l| l.contains("shop/web-7c9"))
        .expect("row");
    assert_eq!(row.find("1a2b3c4d5e6f7081"), Some(col));
}

#[test]
fn trace_text_names_the_rule_and_each_direction() {
    let text = super::trace::render(&trace_result());
    assert!(
        text.contains("Verdict:     DROPPED (POLICY_DENY_RULE)"),
        "{text}"
    );
    assert!(
        text.contains("Decided by:  ingress of the destination"),
        "{text}"
    );
    assert!(
        text.contains(
            "Rule:        CiliumNetworkPolicy shop/deny-intruder, section ingressDeny, rule 0 \
             [shop/deny-intruder[ingressDeny:0]]"
        ),
        "{text}"
    );
    assert!(
        text.contains("Egress of the source:        ALLOW; no policy selects the source"),
        "{text}"
    );
    assert!(
        text.contains("Ingress of the destination:  DENY (POLICY_DENY_RULE); a policy selects"),
        "{text}"
    );
    assert!(
        text.contains("From:        identity 1a2b3c4d5e6f7081\n             k8s:app=frontend\n"),
        "{text}"
    );
}

// ---------------------------------------------------------------- parsing

#[test]
fn the_command_tree_is_consistent_and_documented() {
    Cli::command().debug_assert();
    let mut cmd = Cli::command();
    cmd.build();
    fn walk(cmd: &clap::Command, path: &str) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            assert!(sub.get_about().is_some(), "{path} has no about");
            if sub.get_subcommands().count() == 0 {
                assert!(
                    sub.get_long_about().is_some(),
                    "{path} has no long description"
                );
                let examples = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(examples.contains("Examples:"), "{path} has no examples");
            }
            walk(sub, &path);
        }
    }
    walk(&cmd, "sluice");
    let observe = cmd.find_subcommand("observe").expect("observe");
    let socket = observe
        .get_arguments()
        .find(|a| a.get_id() == "socket")
        .expect("--socket");
    assert_eq!(
        socket.get_env().and_then(|e| e.to_str()),
        Some("SLUICE_SOCKET")
    );
    assert_eq!(socket.get_default_values(), [crate::api::DEFAULT_SOCKET]);
}

#[test]
fn ports_parse_with_protocols() {
    let p = |port, protocol| Ok(PortProtocol { port, protocol });
    assert_eq!(parse_port("8080/TCP"), p(8080, Protocol::Tcp));
    assert_eq!(parse_port("8080"), p(8080, Protocol::Tcp));
    assert_eq!(parse_port("53/udp"), p(53, Protocol::Udp));
    assert_eq!(parse_port("8/ICMP"), p(8, Protocol::Icmp));
    assert_eq!(parse_port("icmp"), p(8, Protocol::Icmp));
    assert_eq!(parse_port("ICMPv6"), p(128, Protocol::IcmpV6));
    assert!(parse_port("80/GRE").unwrap_err().contains("GRE"));
    assert!(
        parse_port("http")
            .unwrap_err()
            .contains("\"http\" is not a port")
    );
    assert!(parse_port("70000/TCP").unwrap_err().contains("70000"));
    assert!(parse_port("0/TCP").unwrap_err().contains("port 0"));
    assert!(parse_port("300/ICMP").unwrap_err().contains("0 to 255"));

    // Through clap: a bad value is a usage error (exit 2) that names the flag and the value.
    let e = Cli::try_parse_from([
        "sluice",
        "policy",
        "trace",
        "--from-labels",
        "app=a",
        "--to-labels",
        "app=b",
        "--port",
        "80/GRE",
    ])
    .expect_err("bad protocol");
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains("--port") && msg.contains("GRE"), "{msg}");

    let e = Cli::try_parse_from([
        "sluice",
        "policy",
        "trace",
        "--to-labels",
        "a=b",
        "--port",
        "1",
    ])
    .expect_err("no sender");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--from-labels"), "{e}");

    let e = Cli::try_parse_from([
        "sluice",
        "policy",
        "trace",
        "--from-labels",
        "app",
        "--to-pod",
        "x/y",
        "--port",
        "1",
    ])
    .expect_err("label without value");
    assert!(e.to_string().contains("expected key=value"), "{e}");
}

#[test]
fn trace_flags_become_the_request() {
    let cli = Cli::try_parse_from([
        "sluice",
        "policy",
        "trace",
        "--from-labels",
        "app=frontend,tier=web",
        "--from-namespace",
        "shop",
        "--to-pod",
        "shop/api-5d8",
        "--to-ip",
        "10.0.0.2",
        "--port",
        "53/UDP",
    ]);
    // --to-pod and --to-ip conflict: a pod has its own address.
    assert!(cli.is_err());
    let cli = Cli::try_parse_from([
        "sluice",
        "policy",
        "trace",
        "--from-labels",
        "app=frontend,tier=web",
        "--from-namespace",
        "shop",
        "--to-pod",
        "shop/api-5d8",
        "--port",
        "53/UDP",
    ])
    .expect("parses");
    let Command::Policy(super::PolicyCommand::Trace(args)) = cli.command else {
        panic!("not a trace");
    };
    let req = args.request();
    assert_eq!(req.from.labels, ["app=frontend", "tier=web"]);
    assert_eq!(req.from.namespace.as_deref(), Some("shop"));
    assert_eq!(req.to.pod.as_deref(), Some("shop/api-5d8"));
    assert_eq!((req.port, req.protocol.as_str()), (53, "UDP"));
}

#[test]
fn since_takes_durations_and_times() {
    assert_eq!(parse_since("5m"), Ok(Since::Ago(Duration::from_secs(300))));
    assert_eq!(
        parse_since("1h 30m"),
        Ok(Since::Ago(Duration::from_secs(5400)))
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(
        parse_since("5m").expect("duration").to_ns(now),
        (1_000_000 - 300) * 1_000_000_000
    );
    let at = |s: &str| parse_since(s).expect(s).to_ns(now);
    assert_eq!(at("2024-11-28T03:12:01Z"), 1_732_763_521_000_000_000);
    assert_eq!(at("2024-11-28T04:12:01+01:00"), 1_732_763_521_000_000_000);
    assert_eq!(at("2024-11-27T22:12:01.5-05:00"), 1_732_763_521_500_000_000);
    assert_eq!(at("2024-11-28 03:12:01"), 1_732_763_521_000_000_000);
    // Far in the past: clamps at the epoch.
    assert_eq!(at("100000h"), 0);
    let e = parse_since("yesterday").expect_err("not a time");
    assert!(e.contains("5m") && e.contains("yesterday"), "{e}");
}

#[test]
fn repeated_flags_build_the_filter() {
    let cli = Cli::try_parse_from([
        "sluice",
        "observe",
        "--from-label",
        "app=frontend",
        "--from-label",
        "app=web,tier=front",
        "--to-pod",
        "shop/api*",
        "-n",
        "shop",
        "--verdict",
        "DROPPED",
        "--verdict",
        "audit",
        "--drop-reason",
        "policy-denied",
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--port",
        "443",
        "--from-identity",
        "world",
        "--to-identity",
        "0x1a2b3c4d5e6f7081",
        "--to-identity",
        "1a2b3c4d5e6f7082",
        "--to-identity",
        "300",
        "--since",
        "5m",
    ])
    .expect("parses");
    let Command::Observe(args) = cli.command else {
        panic!("not observe");
    };
    let now = SystemTime::now();
    let filter = args.filter(now).expect("valid");
    let since = now
        .checked_sub(Duration::from_secs(300))
        .expect("after the epoch")
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64;
    assert_eq!(
        filter,
        FlowFilter {
            from_label: vec!["app=frontend".into(), "app=web,tier=front".into()],
            to_pod: vec!["shop/api*".into()],
            namespace: vec!["shop".into()],
            verdict: vec!["DROPPED".into(), "audit".into()],
            drop_reason: vec!["policy-denied".into()],
            protocol: vec!["tcp".into()],
            port: vec![80, 443],
            from_identity: vec![2],
            to_identity: vec![0x1a2b_3c4d_5e6f_7081, 0x1a2b_3c4d_5e6f_7082, 300],
            since_ns: Some(since),
            ..FlowFilter::default()
        }
    );
    assert_eq!(args.last(), 20);

    let last = |extra: &[&str]| {
        let cli = Cli::try_parse_from(["sluice", "observe"].iter().chain(extra)).expect("parses");
        let Command::Observe(args) = cli.command else {
            panic!("not observe");
        };
        args.last()
    };
    assert_eq!(last(&["-f"]), 0);
    assert_eq!(last(&["--last", "5", "-f"]), 5);
    assert_eq!(last(&["--last", "0"]), usize::MAX);

    let e = Cli::try_parse_from(["sluice", "observe", "--from-identity", "abc"])
        .expect_err("not an identity");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("reserved name"), "{e}");
}

#[test]
fn identities_parse_in_every_printed_form() {
    use super::identity::parse_identity;
    assert_eq!(parse_identity("world"), Ok(2));
    assert_eq!(parse_identity("reserved:host"), Ok(1));
    assert_eq!(parse_identity("0x1A2B"), Ok(0x1a2b));
    assert_eq!(parse_identity("4660"), Ok(4660));
    assert_eq!(
        parse_identity("1a2b3c4d5e6f7081"),
        Ok(0x1a2b_3c4d_5e6f_7081)
    );
    assert!(parse_identity("1a2b").is_err());
    assert!(parse_identity("0x").is_err());
    assert!(parse_identity("99999999999999999999999").is_err());
}

// ---------------------------------------------------------------- against a fake agent

#[test]
fn observe_json_sends_the_filter_and_prints_exactly_what_came_back() {
    let flows = vec![forwarded(), dropped()];
    let mut answer: Vec<Response> = flows
        .iter()
        .map(|f| Response::Flow(Box::new(f.clone())))
        .collect();
    answer.push(Response::End {
        lost: 0,
        evicted: 0,
    });
    let agent = FakeAgent::start("observe", vec![answer]);
    let (code, out, err) = sluice(&[
        "observe",
        "-o",
        "json",
        "--from-label",
        "app=frontend",
        "--socket",
        agent.socket(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    let printed: Vec<FlowRecord> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON flow per line"))
        .collect();
    assert_eq!(printed, flows);
    assert_eq!(
        agent.requests(),
        [Request::Observe {
            filter: FlowFilter {
                from_label: vec!["app=frontend".into()],
                ..FlowFilter::default()
            },
            last: 20,
            follow: false,
        }]
    );
}

#[test]
fn observe_reports_losses_on_stderr_and_prints_tables() {
    let agent = FakeAgent::start(
        "observe-table",
        vec![vec![
            Response::Flow(Box::new(forwarded())),
            Response::Flow(Box::new(dropped())),
            Response::End {
                lost: 3,
                evicted: 5,
            },
        ]],
    );
    let (code, out, err) = sluice(&["observe", "-o", "table", "--socket", agent.socket()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("lost 3") && err.contains("evicted 5"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("TIME                 SOURCE"), "{out}");
    let col = lines[0].find("VERDICT").expect("verdict column");
    assert_eq!(lines[1].find("FORWARDED"), Some(col), "{out}");
    assert_eq!(lines[2].find("DROPPED"), Some(col), "{out}");
    assert!(lines[1].ends_with("shop/allow-frontend[0]"), "{out}");
    agent.requests();
}

#[test]
fn following_asks_for_new_flows_only_and_streams_rows() {
    let agent = FakeAgent::start(
        "follow",
        vec![vec![
            Response::Flow(Box::new(dropped())),
            Response::End {
                lost: 0,
                evicted: 0,
            },
        ]],
    );
    let (code, out, err) = sluice(&["observe", "-f", "-o", "table", "--socket", agent.socket()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // Fixed widths while streaming: the verdict column starts where its header does.
    let col = lines[0].find("VERDICT").expect("verdict column");
    assert_eq!(lines[1].find("DROPPED"), Some(col), "{out}");
    assert_eq!(
        agent.requests(),
        [Request::Observe {
            filter: FlowFilter::default(),
            last: 0,
            follow: true,
        }]
    );
}

#[test]
fn observe_errors_have_exit_codes() {
    // A bad filter is refused before connecting (there is no agent at this path).
    let (code, out, err) = sluice(&[
        "observe",
        "--verdict",
        "ALLOWED",
        "--socket",
        "/nonexistent/sluice.sock",
    ]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with("error: unknown verdict \"ALLOWED\""),
        "{err}"
    );

    // No agent.
    let dir = TempDir::new("missing");
    let missing = dir.path().join("agent.sock");
    let (code, _, err) = sluice(&["observe", "--socket", missing.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(err.contains("is `sluice agent` running?"), "{err}");
    assert!(err.contains(missing.to_str().expect("utf-8")), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // The agent refuses, or hangs up in the middle.
    let agent = FakeAgent::start(
        "observe-errors",
        vec![
            vec![Response::Error {
                message: "flow buffer disabled".into(),
            }],
            vec![Response::Flow(Box::new(forwarded()))],
        ],
    );
    let (code, _, err) = sluice(&["observe", "--socket", agent.socket()]);
    assert_eq!(code, 1);
    assert_eq!(err, "error: the agent says: flow buffer disabled\n");
    let (code, out, err) = sluice(&["observe", "--socket", agent.socket()]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().count(),
        1,
        "the flow before the hang-up is printed: {out}"
    );
    assert!(err.contains("closed the connection"), "{err}");
    agent.requests();
}

#[test]
fn status_with_latency_asks_twice_and_saves_the_report() {
    let mut latency = perf::LatencyReport::new("fastpath workers", perf::MachineInfo::default());
    let mut core = perf::CoreStats::new(1, "lxc2/0");
    core.packets = 10;
    core.elapsed_ns = 1_000_000;
    core.latency.record(1000);
    latency.push(core);
    let agent = FakeAgent::start(
        "status",
        vec![
            vec![Response::Status(Box::new(status_report()))],
            vec![Response::Latency(Box::new(latency.clone()))],
            vec![Response::Status(Box::new(status_report()))],
        ],
    );
    let dir = TempDir::new("latency");
    let file = dir.path().join("latency.json");
    let (code, out, err) = sluice(&[
        "status",
        "--latency-report",
        file.to_str().expect("utf-8"),
        "--socket",
        agent.socket(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unknown field `matchLabel`"), "{out}");
    assert!(
        out.contains("Latency:") && out.contains(&latency.to_table()),
        "{out}"
    );
    let saved: perf::LatencyReport =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("parses");
    assert_eq!(saved, latency);

    let (code, out, _) = sluice(&["status", "-o", "json", "--socket", agent.socket()]);
    assert_eq!(code, 0);
    let back: StatusReport = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(back, status_report());
    assert_eq!(
        agent.requests(),
        [Request::Status, Request::Latency, Request::Status]
    );
}

#[test]
fn a_wrong_answer_is_named() {
    let agent = FakeAgent::start("wrong", vec![vec![Response::Identities(Vec::new())]]);
    let (code, _, err) = sluice(&["status", "--socket", agent.socket()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the agent answered status with an identity list"),
        "{err}"
    );
    agent.requests();
}

#[test]
fn trace_sends_both_ends_and_prints_the_rule() {
    let agent = FakeAgent::start(
        "trace",
        vec![
            vec![Response::Trace(Box::new(trace_result()))],
            vec![Response::Trace(Box::new(trace_result()))],
        ],
    );
    let args = [
        "policy",
        "trace",
        "--from-labels",
        "app=frontend",
        "--to-labels",
        "app=backend",
        "--to-namespace",
        "shop",
        "--port",
        "8080/TCP",
        "--socket",
        agent.socket(),
    ];
    let (code, out, err) = sluice(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shop/deny-intruder[ingressDeny:0]"), "{out}");
    let (code, out, _) = sluice(&[&args[..], &["-o", "json"]].concat());
    assert_eq!(code, 0);
    let back: TraceResult = serde_json::from_str(&out).expect("trace JSON");
    assert_eq!(back, trace_result());
    let requests = agent.requests();
    let expected = Request::Trace(TraceRequest {
        from: crate::api::TracePeer {
            labels: vec!["app=frontend".into()],
            ..Default::default()
        },
        to: crate::api::TracePeer {
            labels: vec!["app=backend".into()],
            namespace: Some("shop".into()),
            ..Default::default()
        },
        port: 8080,
        protocol: "TCP".into(),
    });
    assert_eq!(requests, [expected.clone(), expected]);
}

#[test]
fn identities_list_and_get_by_any_printed_form() {
    let entries = vec![
        IdentityEntry {
            identity: API,
            labels: vec![
                "k8s:app=backend".into(),
                "k8s:io.kubernetes.pod.namespace=shop".into(),
            ],
            endpoints: vec!["shop/api-5d8".into()],
            reserved: false,
        },
        IdentityEntry {
            identity: 2,
            labels: vec!["reserved:world".into()],
            endpoints: Vec::new(),
            reserved: true,
        },
        IdentityEntry {
            identity: WEB,
            labels: vec!["k8s:app=frontend".into()],
            endpoints: vec!["shop/web-7c9".into()],
            reserved: false,
        },
    ];
    let answer = || vec![Response::Identities(entries.clone())];
    let agent = FakeAgent::start("identities", vec![answer(); 6]);
    let s = agent.socket().to_owned();

    let (code, out, _) = sluice(&["identity", "list", "--socket", &s]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "IDENTITY          LABELS                                ENDPOINTS"
    );
    assert_eq!(lines[1], "2                 reserved:world");
    assert_eq!(
        lines[2],
        "1a2b3c4d5e6f7081  k8s:app=frontend                      shop/web-7c9"
    );
    assert_eq!(
        lines[3],
        "3c4d5e6f70819203  k8s:app=backend                       shop/api-5d8"
    );
    assert_eq!(
        lines[4],
        "                  k8s:io.kubernetes.pod.namespace=shop"
    );
    assert_eq!(lines[5], "3 identities");

    for wanted in ["1a2b3c4d", "0x1a2b3c4d5e6f7081", &WEB.to_string()] {
        let (code, out, err) = sluice(&["identity", "get", wanted, "--socket", &s]);
        assert_eq!(code, 0, "{wanted}: {err}");
        assert!(
            out.starts_with("Identity:   1a2b3c4d5e6f7081 (decimal"),
            "{out}"
        );
        assert!(out.contains("Endpoints:  shop/web-7c9"), "{out}");
    }
    let (code, out, _) = sluice(&["identity", "get", "world", "-o", "json", "--socket", &s]);
    assert_eq!(code, 0);
    let back: IdentityEntry = serde_json::from_str(&out).expect("entry JSON");
    assert_eq!(back, entries[1]);
    let (code, _, err) = sluice(&["identity", "get", "0xdead", "--socket", &s]);
    assert_eq!(code, 1);
    assert!(err.contains("not in use"), "{err}");
    assert_eq!(agent.requests().len(), 6);

    // Neither a number nor a prefix: refused without asking.
    let (code, _, err) = sluice(&["identity", "get", "frontend", "--socket", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"frontend\" is not an identity"), "{err}");
}

// ---------------------------------------------------------------- conformance

const SCTP_CASE: &str = r#"{
  "id": "cyclonus-sctp-only-denies-tcp-from-ips",
  "engine": "kubernetes-networkpolicy",
  "namespaces": {"x": {"kubernetes.io/metadata.name": "x"}},
  "pods": [{"namespace": "x", "name": "server", "labels": {}, "ip": "1.2.3.5"}],
  "policies": [
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: policy-207\n  namespace: x\nspec:\n  ingress:\n  - ports:\n    - protocol: SCTP\n  podSelector: {}\n  policyTypes:\n  - Ingress\n"
  ],
  "probes": [
    {"from": {"cidr": "1.2.3.4"}, "to": "x/server", "port": 103, "protocol": "TCP", "expect": "deny"},
    {"from": {"cidr": "1.2.3.4"}, "to": "x/server", "port": 103, "protocol": "SCTP", "expect": "allow"}
  ]
}"#;

#[test]
fn conformance_passes_fails_and_names_broken_cases() {
    let dir = TempDir::new("corpus");
    std::fs::write(dir.path().join("a.json"), SCTP_CASE).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a case").expect("write");
    let corpus = dir.path().to_str().expect("utf-8").to_owned();

    let (code, out, err) = sluice(&["policy", "conformance", &corpus]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "1 cases, 2 probes: 2 passed, 0 failed; 0 cases could not be run: PASS\n"
    );
    let (code, out, _) = sluice(&["policy", "conformance", &corpus, "--verbose"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(
            "PASS cyclonus-sctp-only-denies-tcp-from-ips probe 0: 1.2.3.4 -> x/server 103/TCP"
        ),
        "{out}"
    );

    // A wrong expectation fails its probe; a file that is not a case is reported.
    let wrong = SCTP_CASE.replacen(r#""expect": "deny""#, r#""expect": "allow""#, 1);
    std::fs::write(dir.path().join("b.json"), wrong).expect("write");
    std::fs::write(dir.path().join("c.json"), "{").expect("write");
    let (code, out, _) = sluice(&["policy", "conformance", &corpus, "-o", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("summary JSON");
    assert_eq!(v["cases"], 2);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["broken_cases"], 1);
    assert_eq!(v["results"][0]["probe"], 0);
    assert_eq!(v["results"][0]["got"], "deny");
    assert!(
        v["broken"][0]["error"]
            .as_str()
            .expect("error")
            .contains("does not parse"),
        "{v}"
    );

    // A missing directory is a usage error.
    let (code, _, err) = sluice(&["policy", "conformance", "/nonexistent/cases"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read the corpus directory /nonexistent/cases"),
        "{err}"
    );
}

#[test]
fn the_shared_corpus_passes() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/cases");
    if !corpus.is_dir() {
        eprintln!("skipped: no corpus at {}", corpus.display());
        return;
    }
    let (code, out, err) = sluice(&["policy", "conformance", corpus.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("0 failed; 0 cases could not be run: PASS\n"),
        "{out}"
    );
}
