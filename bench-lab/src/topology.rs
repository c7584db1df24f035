//! The lab's network: generator pods and a sink pod, each a namespace with a veth pair into
//! one node namespace, where the system under test forwards generator → sink.
//!
//! ```text
//!  [gen0 pod] p…g0 ─veth─ h…g0 ┐
//!  [gen1 pod] p…g1 ─veth─ h…g1 ┤ node namespace (system under test, node core)
//!                               └ h…s ─veth─ p…s [sink pod]
//! ```
//!
//! Every veth has GRO on (a veth accepts frames redirected into it only with GRO or an XDP
//! program) and threaded NAPI; [`Topology::place_napi`] pins the node's NAPI kthreads to the
//! node core and the pods' to the generator core (DESIGN.md, "Facts about this platform").
//! Veths can have several queues (`numtxqueues`/`numrxqueues`).
//!
//! With [`TopologyConfig::pairs`] > 1 the lab is N independent *pairs* instead: generator pod
//! `i` → node → sink pod `i`, each on its own veths, so that each pair can be served by a core
//! of its own (`bench-lab scale`). Pair 0's sink is [`Topology::sink`], the others are
//! [`Topology::more_sinks`]; [`Topology::pair`] names both ends of a pair.
//!
//! Addresses: generator pod `i` owns `src_ips` consecutive addresses from
//! `10.128.0.32 + 32·i` (and the IPv6 twins `fd00::10.128.0.x`), the sink `10.128.0.2`
//! (`fd00::a80:2`), the sink of pair `i` `10.128.0.2 + i` ([`sink_v4`]): all in the
//! `10.128.0.0/15` block that sluice's remote pods also come from, so ipcache lookups walk as
//! deep a trie path as on a real node. The node routes each pod's block to its veth with
//! permanent neighbour entries (the sink's XDP program drops ARP and ND), and the pods route
//! everything to the node through an on-link gateway with a permanent neighbour entry. Kernel
//! forwarding itself is switched on or off by each system.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{LabError, Result};
use crate::netns::{self, Netns, mac_text};

/// The sink's IPv4 address.
pub const SINK_V4: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 2);
/// The first generator address (pod 0).
pub const GEN_V4_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 32);
/// Addresses reserved per generator pod (its block is a /27).
pub const GEN_BLOCK: u32 = 32;
/// Most generator → sink pairs (the sinks' addresses sit below the first generator block).
pub const MAX_PAIRS: usize = 30;
/// The gateway address the pods route through (answered by a permanent neighbour entry).
const GATEWAY_V4: &str = "169.254.1.1";
const GATEWAY_V6: &str = "fe80::1";

/// The IPv6 twin of a lab IPv4 address: `fd00::` with the IPv4 address as its low 32 bits.
pub fn v6_of(v4: Ipv4Addr) -> Ipv6Addr {
    let n = u32::from(v4);
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16)
}

/// The first address of generator pod `i`.
pub fn gen_base(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(GEN_V4_BASE) + GEN_BLOCK * i as u32)
}

/// The sink address of pair `i` (`10.128.0.2 + i`; pair 0's is [`SINK_V4`]).
pub fn sink_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SINK_V4) + i as u32)
}

/// How to build the topology.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TopologyConfig {
    /// Generator pods (≥ 1; equal to `pairs` when `pairs` > 1).
    pub gen_pods: usize,
    /// Independent generator → sink pairs (1: every generator sends to the one sink).
    pub pairs: usize,
    /// Queues per veth (1 or 2; veth has at most 2 here).
    pub queues: u32,
    /// Source addresses per generator pod (1..=32).
    pub src_ips: u32,
    /// The node's core: its NAPI kthreads (and a system's workers) run there.
    pub node_cpu: usize,
    /// The generator's core: the generator thread and the pods' NAPI kthreads.
    pub gen_cpu: usize,
    /// Nice value of the node's NAPI kthreads (−20: the node's core is for the node's work).
    pub node_nice: i32,
    /// Nice value of the pods' NAPI kthreads (−20: the sink must win its core over the
    /// generator, or a sink that drops makes the node look slow).
    pub pod_nice: i32,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            gen_pods: 1,
            pairs: 1,
            queues: 1,
            src_ips: 1,
            node_cpu: 0,
            gen_cpu: 1,
            node_nice: -20,
            pod_nice: -20,
        }
    }
}

impl TopologyConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.gen_pods == 0 || self.gen_pods > 64 {
            return Err(LabError::Invalid {
                what: "generator pods",
                reason: format!("{} (1..=64)", self.gen_pods),
            });
        }
        if self.pairs == 0 || self.pairs > MAX_PAIRS {
            return Err(LabError::Invalid {
                what: "pairs",
                reason: format!("{} (1..={MAX_PAIRS})", self.pairs),
            });
        }
        if self.pairs > 1 && self.gen_pods != self.pairs {
            return Err(LabError::Invalid {
                what: "generator pods",
                reason: format!(
                    "{} with {} pairs (each pair has exactly one generator)",
                    self.gen_pods, self.pairs
                ),
            });
        }
        if !(1..=2).contains(&self.queues) {
            return Err(LabError::Invalid {
                what: "queues",
                reason: format!("{} (veth has 1 or 2 here)", self.queues),
            });
        }
        if self.src_ips == 0 || self.src_ips > GEN_BLOCK {
            return Err(LabError::Invalid {
                what: "source addresses",
                reason: format!("{} (1..={GEN_BLOCK})", self.src_ips),
            });
        }
        Ok(())
    }
}

/// One pod: its namespace and its veth pair into the node.
#[derive(Debug)]
pub struct Pod {
    /// The pod's namespace (deleting it deletes the veth pair).
    pub ns: Netns,
    /// The pod-side interface.
    pub dev: String,
    /// The node-side interface.
    pub host_dev: String,
    /// Index of `dev` in the pod.
    pub ifindex: u32,
    /// Index of `host_dev` in the node.
    pub host_ifindex: u32,
    /// MAC of `dev`.
    pub mac: [u8; 6],
    /// MAC of `host_dev`.
    pub host_mac: [u8; 6],
    /// The pod's IPv4 addresses.
    pub v4: Vec<Ipv4Addr>,
}

impl Pod {
    /// The pod's IPv6 addresses (twins of `v4`).
    pub fn v6(&self) -> Vec<Ipv6Addr> {
        self.v4.iter().copied().map(v6_of).collect()
    }
}

/// The built topology. Fields drop in order: pods first (their veths go with them), the node
/// last.
#[derive(Debug)]
pub struct Topology {
    /// How it was built.
    pub config: TopologyConfig,
    /// Generator pods.
    pub gens: Vec<Pod>,
    /// The sink pod (of pair 0).
    pub sink: Pod,
    /// The sink pods of pairs 1.. (empty with one pair).
    pub more_sinks: Vec<Pod>,
    /// The node namespace.
    pub node: Netns,
}

fn short_id() -> u32 {
    std::process::id() % 10_000
}

impl Topology {
    /// Builds namespaces, veths, addresses, routes and neighbour entries.
    pub fn build(config: TopologyConfig) -> Result<Self> {
        config.validate()?;
        let node = Netns::new("node")?;
        // A new namespace starts with rp_filter 0 and forwarding off; make both explicit.
        node.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        node.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        node.sysctl("net.ipv4.ip_forward", "0")?;
        node.sysctl("net.ipv6.conf.all.forwarding", "0")?;
        node.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        let id = short_id();
        let mut gens = Vec::with_capacity(config.gen_pods);
        for i in 0..config.gen_pods {
            let base = u32::from(gen_base(i));
            let v4 = (0..config.src_ips)
                .map(|k| Ipv4Addr::from(base + k))
                .collect();
            gens.push(Self::pod(
                &node,
                &format!("gen{i}"),
                &format!("g{i}"),
                id,
                v4,
                config.queues,
            )?);
            netns::check_interrupted()?;
        }
        let sink = Self::pod(&node, "sink", "s", id, vec![SINK_V4], config.queues)?;
        let mut more_sinks = Vec::with_capacity(config.pairs - 1);
        for i in 1..config.pairs {
            more_sinks.push(Self::pod(
                &node,
                &format!("sink{i}"),
                &format!("s{i}"),
                id,
                vec![sink_v4(i)],
                config.queues,
            )?);
            netns::check_interrupted()?;
        }
        let topology = Topology {
            config,
            gens,
            sink,
            more_sinks,
            node,
        };
        topology.node_routes()?;
        Ok(topology)
    }

    fn pod(
        node: &Netns,
        role: &str,
        tag: &str,
        id: u32,
        v4: Vec<Ipv4Addr>,
        queues: u32,
    ) -> Result<Pod> {
        let ns = Netns::new(role)?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        // Short names: a NAPI kthread is `napi/DEV-ID`, cut at 15 bytes.
        let host_dev = format!("h{id}{tag}");
        let dev = format!("p{id}{tag}");
        let q = queues.to_string();
        node.ip(&[
            "link",
            "add",
            "name",
            &host_dev,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &dev,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &ns.name,
        ])?;
        for (space, d) in [(node, &host_dev), (&ns, &dev)] {
            space.ip(&["link", "set", d, "up"])?;
            space.exec(&["ethtool", "-K", d, "gro", "on"])?;
            space.write_file(&format!("/sys/class/net/{d}/threaded"), "1")?;
        }
        let host_mac = node.mac(&host_dev)?;
        let mut batch = String::new();
        for a in &v4 {
            batch.push_str(&format!("address add {a}/32 dev {dev}\n"));
            batch.push_str(&format!("address add {}/128 dev {dev} nodad\n", v6_of(*a)));
        }
        let hm = mac_text(host_mac);
        batch.push_str(&format!(
            "neigh replace {GATEWAY_V4} lladdr {hm} dev {dev} nud permanent\n\
             route add default via {GATEWAY_V4} dev {dev} onlink\n\
             neigh replace {GATEWAY_V6} lladdr {hm} dev {dev} nud permanent\n\
             route add ::/0 via {GATEWAY_V6} dev {dev}\n"
        ));
        netns::run_with_input(&["ip", "-n", &ns.name, "-batch", "-"], Some(&batch))?;
        Ok(Pod {
            ifindex: ns.ifindex(&dev)?,
            host_ifindex: node.ifindex(&host_dev)?,
            mac: ns.mac(&dev)?,
            host_mac,
            ns,
            dev,
            host_dev,
            v4,
        })
    }

    /// Routes and permanent neighbour entries in the node for every pod address.
    fn node_routes(&self) -> Result<()> {
        let mut batch = String::new();
        for pod in self.pods() {
            let (dev, mac) = (&pod.host_dev, mac_text(pod.mac));
            for a in &pod.v4 {
                batch.push_str(&format!(
                    "route add {a}/32 dev {dev}\nroute add {}/128 dev {dev}\n\
                     neigh replace {a} lladdr {mac} dev {dev} nud permanent\n\
                     neigh replace {} lladdr {mac} dev {dev} nud permanent\n",
                    v6_of(*a),
                    v6_of(*a)
                ));
            }
        }
        netns::run_with_input(&["ip", "-n", &self.node.name, "-batch", "-"], Some(&batch)).map(drop)
    }

    /// Switches the node's kernel forwarding (IPv4 and IPv6) on or off.
    pub fn set_forwarding(&self, on: bool) -> Result<()> {
        let v = if on { "1" } else { "0" };
        self.node.sysctl("net.ipv4.ip_forward", v)?;
        self.node.sysctl("net.ipv6.conf.all.forwarding", v)
    }

    /// Every pod: generators, then the sinks in pair order.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.gens
            .iter()
            .chain(std::iter::once(&self.sink))
            .chain(self.more_sinks.iter())
    }

    /// The sink pods in pair order.
    pub fn sinks(&self) -> impl Iterator<Item = &Pod> {
        std::iter::once(&self.sink).chain(self.more_sinks.iter())
    }

    /// Number of generator → sink pairs.
    pub fn pairs(&self) -> usize {
        1 + self.more_sinks.len()
    }

    /// Pair `i`'s generator and sink pods (with one pair: generator pod 0 and the sink).
    pub fn pair(&self, i: usize) -> Option<(&Pod, &Pod)> {
        let sink = if i == 0 {
            &self.sink
        } else {
            self.more_sinks.get(i - 1)?
        };
        Some((self.gens.get(i)?, sink))
    }

    /// The node-side interfaces: generator-facing ones, then the sink-facing ones.
    pub fn node_devs(&self) -> Vec<(&str, u32)> {
        self.pods()
            .map(|p| (p.host_dev.as_str(), p.host_ifindex))
            .collect()
    }

    /// Pins NAPI kthreads: the node's to the node core (nice `node_nice`), the pods' to the
    /// generator core (nice `pod_nice`). Returns the node's kthread ids (for CPU accounting).
    /// Kthreads come and go with NAPI: call it after anything is attached. `node_nice`
    /// overrides the configured nice value of the node's kthreads.
    pub fn place_napi(&self, node_nice: Option<i32>) -> Result<Vec<i32>> {
        let c = &self.config;
        let nice = node_nice.unwrap_or(c.node_nice);
        let mut node = Vec::new();
        for (dev, _) in self.node_devs() {
            node.extend(pin_napi(dev, c.node_cpu, nice)?);
        }
        for pod in self.pods() {
            for pid in fastpath::sched::napi_threads(&pod.dev) {
                netns::pin_to_cpu(pid, c.gen_cpu)?;
                netns::set_nice(pid, c.pod_nice)?;
            }
        }
        node.sort_unstable();
        Ok(node)
    }

    /// Pins pair `i`'s NAPI kthreads: its two node-side veths' to `node_cpu` (nice
    /// `node_nice`, default the configured one), its generator's and sink's pod-side veths' to
    /// `pod_cpu` (nice `pod_nice`). Returns the node-side kthread ids (for CPU accounting).
    pub fn place_pair_napi(
        &self,
        i: usize,
        node_cpu: usize,
        pod_cpu: usize,
        node_nice: Option<i32>,
    ) -> Result<Vec<i32>> {
        let (generator, sink) = self.pair(i).ok_or_else(|| LabError::Invalid {
            what: "pair",
            reason: format!("{i} (the topology has {})", self.pairs()),
        })?;
        let nice = node_nice.unwrap_or(self.config.node_nice);
        let mut node = Vec::new();
        for pod in [generator, sink] {
            node.extend(pin_napi(&pod.host_dev, node_cpu, nice)?);
            for pid in fastpath::sched::napi_threads(&pod.dev) {
                netns::pin_to_cpu(pid, pod_cpu)?;
                netns::set_nice(pid, self.config.pod_nice)?;
            }
        }
        node.sort_unstable();
        Ok(node)
    }
}

/// Pins the threaded-NAPI kthreads of node-side `dev` to `cpu` at `nice`; returns their ids
/// (an error if there are none: the node's work would go unaccounted).
fn pin_napi(dev: &str, cpu: usize, nice: i32) -> Result<Vec<i32>> {
    let pids = fastpath::sched::napi_threads(dev);
    if pids.is_empty() {
        return Err(LabError::System {
            system: "topology".into(),
            reason: format!("no threaded NAPI kthread for {dev}"),
        });
    }
    for pid in &pids {
        netns::pin_to_cpu(*pid, cpu)?;
        netns::set_nice(*pid, nice)?;
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_documented_plan() {
        assert_eq!(gen_base(0), Ipv4Addr::new(10, 128, 0, 32));
        assert_eq!(gen_base(2), Ipv4Addr::new(10, 128, 0, 96));
        assert_eq!(v6_of(SINK_V4), "fd00::a80:2".parse::<Ipv6Addr>().unwrap());
        assert!(TopologyConfig::default().validate().is_ok());
        let bad = TopologyConfig {
            src_ips: 33,
            ..TopologyConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(sink_v4(0), SINK_V4);
        assert_eq!(sink_v4(3), Ipv4Addr::new(10, 128, 0, 5));
        assert!(
            sink_v4(MAX_PAIRS - 1) < gen_base(0),
            "sinks sit below the generators"
        );
        let pairs = TopologyConfig {
            pairs: 2,
            ..TopologyConfig::default()
        };
        assert!(pairs.validate().is_err(), "two pairs need two generators");
        let pairs = TopologyConfig {
            gen_pods: 2,
            ..pairs
        };
        assert!(pairs.validate().is_ok());
    }
}
