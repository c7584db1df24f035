//! AF_XDP steering with real packets: pods A and B on veth pairs into a node namespace, the
//! steering program attached to both host-side veths, a raw AF_XDP socket (tests/support
//! `Xsk`, copy mode) bound to A's host veth queue 0 and registered with
//! `Dataplane::register_socket(A's ifindex, 0, …)`.
//!
//! What is asserted:
//! - managed traffic from A lands in the socket, as the frame A sent, and not at B, and
//!   `CNT_TO_SOCKET` counts exactly the frames the socket got;
//! - nothing else does: ARP (A re-resolves its gateway while steering is on), a spoofed source
//!   (dropped, `DROP_SPOOFED_SOURCE`), the node's own traffic to A: every frame in the socket is
//!   IPv4/IPv6 with A's address as source;
//! - closing the socket (unregister + close, and close alone: the kernel drops a released
//!   socket from the XSKMAP) falls back to in-kernel enforcement, with a burst running through
//!   the switch-over and no denied datagram ever reaching B.
//!
//! The XSKMAP is keyed by queue only and shared by every interface the program is attached
//! to, so B's queue-0 traffic is steered to the socket bound on A's veth too; the kernel
//! refuses to deliver a frame to a socket bound to another device (`xsk_rcv_check`: -EINVAL),
//! so the redirect fails after the program returned XDP_REDIRECT. The first test records what
//! happens to such traffic (see the report it prints).
//!
//! Needs root (namespaces, BPF, AF_XDP); skipped with a message otherwise.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use identity_cache::verdict::DropReason;
use support::{Netns, PacketSocket, Pod, RemoveDir, Xsk};
use xdp_redirect::abi::{CNT_KERNEL_REDIRECT, CNT_NON_IP, CNT_TO_SOCKET};
use xdp_redirect::loader::{Counters, DatapathSettings, Dataplane};

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-a, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: \"5000\", protocol: UDP}]}]
";

/// Node, pods A and B, the program attached to both host veths. Fields drop in order: the
/// loader (its link fds), the pins, the pods' namespaces, the node's.
struct Lab {
    plane: Option<Dataplane>,
    _pins: RemoveDir,
    a: Pod,
    b: Pod,
    node: Netns,
}

impl Lab {
    fn new() -> Lab {
        support::ensure_bpffs();
        let node = support::node();
        let a = Pod::attach(&node, 1);
        let b = Pod::attach(&node, 2);
        let pin_dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-xsk-")));
        let pins = RemoveDir(pin_dir.clone());
        let snapshot = support::snapshot_of(
            vec![
                support::local_workload(&a, "a", "a", vec![a.ip.into()]),
                support::local_workload(&b, "b", "b", vec![b.ip.into()]),
            ],
            POLICY,
        );
        let facts = support::HostFacts::of(&[&a, &b]);
        let (ai, bi) = (a.host_ifindex, b.host_ifindex);
        let settings = DatapathSettings {
            events_per_sec: 0,
            ..DatapathSettings::default()
        };
        let plane = node.run(move || {
            let mut plane = Dataplane::open(&pin_dir, settings).expect("load");
            plane.sync(&snapshot, &facts).expect("sync");
            let mode = plane.attach(ai).expect("attach a");
            plane.attach(bi).expect("attach b");
            eprintln!("attached in {mode} mode");
            plane
        });
        Lab {
            plane: Some(plane),
            _pins: pins,
            a,
            b,
            node,
        }
    }

    fn plane(&mut self) -> &mut Dataplane {
        self.plane.as_mut().expect("plane")
    }

    fn counters(&self) -> Counters {
        self.plane
            .as_ref()
            .expect("plane")
            .counters()
            .expect("counters")
    }

    /// A socket bound to A's host veth queue 0 (created in the node namespace, where the
    /// ifindex means A's veth) and registered for queue 0.
    fn steer_to_new_socket(&mut self) -> Xsk {
        let ai = self.a.host_ifindex;
        let xsk = self
            .node
            .run(move || Xsk::bind(ai, 0))
            .expect("AF_XDP socket on A's host veth, queue 0");
        self.plane()
            .register_socket(ai, 0, &xsk)
            .expect("register socket for A's veth, queue 0");
        xsk
    }

    fn destroy(mut self) {
        let plane = self.plane.take().expect("plane");
        self.node.run(move || plane.destroy().expect("destroy"));
    }
}

fn delta(before: &Counters, after: &Counters, slot: u32) -> u64 {
    after.packets(slot) - before.packets(slot)
}

/// Receives UDP datagrams in `ns` on `ip`:`ports` for `duration` (at most 100 000), from a
/// thread that has bound its sockets when this returns.
fn listen(
    ns: &Netns,
    ip: Ipv4Addr,
    ports: &[u16],
    duration: Duration,
) -> JoinHandle<Vec<(u16, Vec<u8>)>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = ns.name.clone();
    let ports = ports.to_vec();
    let handle = std::thread::spawn(move || {
        support::in_netns(&path, move || {
            let socks: Vec<(u16, UdpSocket)> = ports
                .iter()
                .map(|&p| {
                    let s = support::bind_udp(SocketAddrV4::new(ip, p));
                    s.set_nonblocking(true).expect("nonblocking");
                    (p, s)
                })
                .collect();
            let _ = ready_tx.send(());
            let deadline = Instant::now() + duration;
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            for _ in 0..1_000_000 {
                for (port, s) in &socks {
                    for _ in 0..1000 {
                        let Ok((n, _)) = s.recv_from(&mut buf) else {
                            break;
                        };
                        got.push((*port, buf[..n].to_vec()));
                    }
                }
                if Instant::now() >= deadline || got.len() >= 100_000 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener ready");
    handle
}

/// Sends UDP datagrams from `ns` (source `src`) to `dst`.
fn send_udp(ns: &Netns, src: Ipv4Addr, dst: SocketAddrV4, payloads: Vec<Vec<u8>>) {
    ns.run(move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind sender");
        for p in payloads {
            sock.send_to(&p, dst).expect("send");
        }
    });
}

/// A parsed IPv4 UDP frame.
#[derive(Debug, PartialEq, Eq)]
struct Udp4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

/// Parses an Ethernet + IPv4 + UDP frame (None for anything else or anything inconsistent).
fn parse_udp4(frame: &[u8]) -> Option<Udp4> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || hlen < 20 || total < hlen + 8 || total > ip.len() || ip[9] != 17 {
        return None;
    }
    let udp = &ip[hlen..total];
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    Some(Udp4 {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp[8..ulen].to_vec(),
    })
}

/// Ethertype and IP source of a frame (no VLAN tags expected from a veth).
fn ip_source(frame: &[u8]) -> (u16, Option<IpAddr>) {
    if frame.len() < 14 {
        return (0, None);
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l3 = &frame[14..];
    let src = match ethertype {
        0x0800 if l3.len() >= 20 => Some(IpAddr::from([l3[12], l3[13], l3[14], l3[15]])),
        0x86dd if l3.len() >= 40 => {
            let b: [u8; 16] = l3[8..24].try_into().expect("16 bytes");
            Some(IpAddr::from(b))
        }
        _ => None,
    };
    (ethertype, src)
}

/// A hand-built IPv4 UDP frame (checksums right), for sources the pod's stack would not use.
fn udp4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&0x5151u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = support::checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    f.extend_from_slice(payload);
    f
}

/// `ethtool -S` of a node interface as (name, value) pairs, for the report.
fn nic_stats(node: &Netns, dev: &str) -> Vec<(String, u64)> {
    let out = node.exec(&["ethtool", "-S", dev]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stats_diff(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before.iter().find(|(k2, _)| k2 == k).map_or(0, |(_, v)| *v);
            (*v != old).then(|| format!("{k} +{}", v - old))
        })
        .collect()
}

#[test]
fn managed_traffic_reaches_the_socket_and_nothing_else_does() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces, load BPF and open AF_XDP sockets");
        return;
    }
    let mut lab = Lab::new();
    let (a_ip, b_ip) = (lab.a.ip, lab.b.ip);

    // In-kernel path first: the allowed port is delivered (and ARP is resolved).
    let rx = listen(&lab.b.ns, b_ip, &[5000], Duration::from_millis(700));
    send_udp(
        &lab.a.ns,
        a_ip,
        SocketAddrV4::new(b_ip, 5000),
        vec![b"kernel".to_vec()],
    );
    assert_eq!(
        rx.join().expect("listener"),
        vec![(5000, b"kernel".to_vec())],
        "in-kernel baseline"
    );

    let mut xsk = lab.steer_to_new_socket();
    let mut seen: Vec<Vec<u8>> = Vec::new();

    // (a) + (b, ARP): A forgets its gateway's MAC, so it ARPs (passed untouched, CNT_NON_IP)
    // before sending the datagram, which goes to the socket and not to B.
    lab.a.ns.ip(&["neigh", "flush", "dev", "eth0"]);
    let before = lab.counters();
    let rx = listen(&lab.b.ns, b_ip, &[5000], Duration::from_millis(800));
    send_udp(
        &lab.a.ns,
        a_ip,
        SocketAddrV4::new(b_ip, 5000),
        vec![b"steered-1".to_vec()],
    );
    let mine = |f: &Vec<u8>| parse_udp4(f).is_some_and(|u| u.payload == b"steered-1");
    let frames = xsk.recv_until(Duration::from_secs(2), |fs| fs.iter().any(mine));
    let at_b = rx.join().expect("listener");
    // Let anything else A sent settle, then take it too: the counter must match.
    std::thread::sleep(Duration::from_millis(100));
    let mut frames = frames;
    frames.extend(xsk.poll_rx());
    let after = lab.counters();
    assert!(
        at_b.is_empty(),
        "the steered datagram must not reach B: {at_b:?}"
    );
    let udp = frames
        .iter()
        .find_map(|f| parse_udp4(f).filter(|u| u.payload == b"steered-1"));
    let udp = udp.unwrap_or_else(|| {
        panic!(
            "datagram not in the socket; got {} frames: {frames:02x?}",
            frames.len()
        )
    });
    assert_eq!(
        (udp.src, udp.dst, udp.dport),
        (a_ip, b_ip, 5000),
        "the frame is A's datagram as sent: {udp:?}"
    );
    assert!(udp.sport != 0, "{udp:?}");
    let steered = frames.iter().filter(|f| mine(f)).count();
    assert_eq!(steered, 1, "exactly one copy in the socket");
    let frame = frames.iter().find(|f| mine(f)).expect("frame");
    assert_eq!(
        frame[0..6],
        lab.a.host_mac,
        "unmodified: destination MAC is still the host veth's"
    );
    assert_eq!(frame[6..12], lab.a.mac, "unmodified: source MAC is A's");
    assert_eq!(
        delta(&before, &after, CNT_TO_SOCKET),
        frames.len() as u64,
        "CNT_TO_SOCKET counts exactly the frames the socket received: {frames:02x?}"
    );
    assert!(
        delta(&before, &after, CNT_NON_IP) >= 1,
        "A's ARP request was passed untouched (CNT_NON_IP)"
    );
    assert_eq!(
        delta(&before, &after, CNT_KERNEL_REDIRECT),
        0,
        "nothing took the in-kernel path"
    );
    seen.extend(frames);

    // (b) A spoofed source from A's interface: dropped before steering, never in the socket.
    let (a_host_mac, a_mac) = (lab.a.host_mac, lab.a.mac);
    let spoof = udp4_frame(
        a_host_mac,
        a_mac,
        Ipv4Addr::new(10, 77, 9, 9),
        b_ip,
        5000,
        b"spoofed",
    );
    let before = lab.counters();
    lab.a.ns.run(move || {
        let ifindex = support::ifindex_here("eth0").expect("eth0");
        let tx = PacketSocket::open(ifindex, 0).expect("AF_PACKET");
        tx.send(&spoof).expect("send spoofed frame");
    });
    let frames = xsk.recv_until(Duration::from_millis(300), |_| false);
    let after = lab.counters();
    assert_eq!(
        after.dropped(DropReason::SpoofedSource) - before.dropped(DropReason::SpoofedSource),
        1
    );
    assert!(
        frames
            .iter()
            .all(|f| parse_udp4(f).is_none_or(|u| u.payload != b"spoofed")),
        "spoofed frame in the socket"
    );
    seen.extend(frames);

    // (b) The node's own traffic to A: the node sends it out of A's host veth, where XDP does
    // not run (ingress only); it reaches A and never the socket.
    let node_ip = Ipv4Addr::new(10, 77, 1, 1);
    let rx = listen(&lab.a.ns, a_ip, &[6000], Duration::from_millis(700));
    let before = lab.counters();
    send_udp(
        &lab.node,
        node_ip,
        SocketAddrV4::new(a_ip, 6000),
        vec![b"from-node".to_vec()],
    );
    let at_a = rx.join().expect("listener");
    let frames = xsk.recv_until(Duration::from_millis(200), |_| false);
    let after = lab.counters();
    assert_eq!(
        at_a,
        vec![(6000, b"from-node".to_vec())],
        "node -> A is delivered"
    );
    assert_eq!(delta(&before, &after, CNT_TO_SOCKET), frames.len() as u64);
    seen.extend(frames);

    // Every frame the socket ever got: IPv4/IPv6 whose source is A's own address.
    for f in &seen {
        let (ethertype, src) = ip_source(f);
        assert!(
            matches!(ethertype, 0x0800 | 0x86dd) && src == Some(IpAddr::V4(a_ip)),
            "only A's own IP traffic may reach the socket; got ethertype {ethertype:#06x} from {src:?}: {f:02x?}"
        );
    }
    let stats = xsk.statistics().expect("XDP_STATISTICS");
    assert_eq!(stats.rx_dropped, 0, "the socket dropped nothing");

    // B's veth has no socket of its own: its queue 0 must not be steered into the socket bound
    // to A's veth (the kernel would drop such a frame); it is decided in the kernel instead.
    let b_dev = lab.b.host_dev.clone();
    let nic_before = nic_stats(&lab.node, &b_dev);
    let before = lab.counters();
    let rx = listen(&lab.a.ns, a_ip, &[7000], Duration::from_millis(800));
    send_udp(
        &lab.b.ns,
        b_ip,
        SocketAddrV4::new(a_ip, 7000),
        vec![b"from-b".to_vec()],
    );
    let at_a = rx.join().expect("listener");
    let frames = xsk.recv_until(Duration::from_millis(200), |_| false);
    let after = lab.counters();
    let nic_after = nic_stats(&lab.node, &b_dev);
    let in_socket = frames
        .iter()
        .any(|f| parse_udp4(f).is_some_and(|u| u.payload == b"from-b"));
    assert!(
        !in_socket,
        "a frame received on B's veth must never reach a socket bound to A's veth"
    );
    assert_eq!(
        at_a,
        vec![(7000, b"from-b".to_vec())],
        "B -> A is decided in the kernel and delivered; B veth stats: {:?}",
        stats_diff(&nic_before, &nic_after)
    );
    assert_eq!(
        delta(&before, &after, CNT_TO_SOCKET),
        0,
        "nothing steered from B's veth"
    );
    assert!(delta(&before, &after, CNT_KERNEL_REDIRECT) >= 1);

    let ai = lab.a.host_ifindex;
    lab.plane().unregister_socket(ai, 0).expect("unregister");
    drop(xsk);
    lab.destroy();
}

#[derive(Clone, Copy, Debug)]
enum Close {
    /// `unregister_socket(A's ifindex, 0)`, then close the socket.
    UnregisterThenClose,
    /// Close the socket only: the kernel removes it from the XSKMAP on release.
    CloseOnly,
}

#[test]
fn closing_the_socket_falls_back_to_in_kernel_enforcement_without_an_allow_all_window() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces, load BPF and open AF_XDP sockets");
        return;
    }
    let mut lab = Lab::new();
    let (a_ip, b_ip) = (lab.a.ip, lab.b.ip);

    for how in [Close::UnregisterThenClose, Close::CloseOnly] {
        let mut xsk = lab.steer_to_new_socket();

        // Steering is on: allowed and denied ports alike go to the socket, none to B.
        let rx = listen(&lab.b.ns, b_ip, &[5000, 5001], Duration::from_millis(700));
        send_udp(
            &lab.a.ns,
            a_ip,
            SocketAddrV4::new(b_ip, 5000),
            vec![b"probe-5000".to_vec()],
        );
        send_udp(
            &lab.a.ns,
            a_ip,
            SocketAddrV4::new(b_ip, 5001),
            vec![b"probe-5001".to_vec()],
        );
        let frames = xsk.recv_until(Duration::from_secs(2), |fs| {
            fs.iter().filter(|f| parse_udp4(f).is_some()).count() >= 2
        });
        assert_eq!(
            rx.join().expect("listener"),
            vec![],
            "{how:?}: nothing reaches B while steering"
        );
        let ports: Vec<u16> = frames
            .iter()
            .filter_map(|f| parse_udp4(f))
            .map(|u| u.dport)
            .collect();
        assert!(
            ports.contains(&5000) && ports.contains(&5001),
            "{how:?}: both in the socket: {ports:?}"
        );

        // A burst across the close: pairs to 5000 (allowed) and 5001 (denied), 2 ms apart,
        // for about a second; the socket closes about 300 ms in.
        let before = lab.counters();
        let rx = listen(&lab.b.ns, b_ip, &[5000, 5001], Duration::from_millis(2500));
        let sender = {
            let path = lab.a.ns.name.clone();
            std::thread::spawn(move || {
                support::in_netns(&path, move || {
                    let sock = UdpSocket::bind(SocketAddrV4::new(a_ip, 0)).expect("bind sender");
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let mut sent = 0u32;
                    for i in 0..500u32 {
                        for port in [5000u16, 5001] {
                            let msg = format!("burst-{port}-{i}");
                            sock.send_to(msg.as_bytes(), SocketAddrV4::new(b_ip, port))
                                .expect("send");
                        }
                        sent += 1;
                        if Instant::now() >= deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    sent
                })
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mid = lab.counters();
        let xsk_stats = xsk.statistics().expect("XDP_STATISTICS");
        let in_ring = xsk.poll_rx().len();
        match how {
            Close::UnregisterThenClose => {
                let ai = lab.a.host_ifindex;
                lab.plane().unregister_socket(ai, 0).expect("unregister");
                drop(xsk);
            }
            Close::CloseOnly => drop(xsk),
        }
        let sent = sender.join().expect("sender");
        let at_b = rx.join().expect("listener");
        // Every datagram sent is counted once (plus non-IP background such as ARP and MLD);
        // allow the last ones up to a second to be processed.
        let settled = |after: &Counters| {
            after.total() - before.total()
                == u64::from(sent) * 2 + (after.packets(CNT_NON_IP) - before.packets(CNT_NON_IP))
        };
        let after = support::wait_for(Duration::from_secs(1), || {
            Some(lab.counters()).filter(settled)
        })
        .unwrap_or_else(|| lab.counters());

        let denied_at_b: Vec<String> = at_b
            .iter()
            .filter(|(p, _)| *p == 5001)
            .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
            .collect();
        assert!(
            denied_at_b.is_empty(),
            "{how:?}: denied datagrams reached B across the close: {denied_at_b:?}"
        );
        let allowed_at_b = at_b.iter().filter(|(p, _)| *p == 5000).count();
        let to_socket = delta(&before, &mid, CNT_TO_SOCKET);
        let redirected = delta(&mid, &after, CNT_KERNEL_REDIRECT);
        let denied =
            after.dropped(DropReason::PolicyDenied) - mid.dropped(DropReason::PolicyDenied);
        eprintln!(
            "{how:?}: {sent} pairs sent; before the close CNT_TO_SOCKET +{to_socket} ({in_ring} frames in the RX ring, \
             socket stats: rx_dropped {}, rx_ring_full {}, rx_fill_ring_empty_descs {}); after it {redirected} redirected, \
             {denied} denied; {allowed_at_b} allowed datagrams at B",
            xsk_stats.rx_dropped, xsk_stats.rx_ring_full, xsk_stats.rx_fill_ring_empty_descs
        );
        assert!(
            to_socket > 0,
            "{how:?}: the burst started while steering was on"
        );
        assert!(
            redirected > 0 && allowed_at_b > 0,
            "{how:?}: allowed traffic is delivered in kernel after the close"
        );
        assert!(
            denied > 0,
            "{how:?}: denied traffic is dropped in kernel after the close"
        );
        assert!(
            settled(&after),
            "{how:?}: every datagram of the burst was counted once (plus non-IP background): {sent} pairs, {after:?}"
        );

        // Steady state: the socket is gone from the XSKMAP, enforcement is in the kernel.
        let before = lab.counters();
        let rx = listen(&lab.b.ns, b_ip, &[5000, 5001], Duration::from_millis(700));
        send_udp(
            &lab.a.ns,
            a_ip,
            SocketAddrV4::new(b_ip, 5000),
            vec![b"after-5000".to_vec()],
        );
        send_udp(
            &lab.a.ns,
            a_ip,
            SocketAddrV4::new(b_ip, 5001),
            vec![b"after-5001".to_vec()],
        );
        let at_b = rx.join().expect("listener");
        let after = lab.counters();
        assert_eq!(
            at_b,
            vec![(5000, b"after-5000".to_vec())],
            "{how:?}: allowed delivered, denied dropped"
        );
        assert_eq!(
            delta(&before, &after, CNT_TO_SOCKET),
            0,
            "{how:?}: nothing steered once the socket is closed"
        );
        assert_eq!(
            after.dropped(DropReason::PolicyDenied) - before.dropped(DropReason::PolicyDenied),
            1
        );
        if matches!(how, Close::CloseOnly) {
            let ai = lab.a.host_ifindex;
            lab.plane()
                .unregister_socket(ai, 0)
                .expect("unregistering an already released socket is harmless");
        }
    }
    lab.destroy();
}
