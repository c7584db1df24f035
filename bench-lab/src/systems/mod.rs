//! The systems under test. Each one sets itself up on the same [`Topology`] (node namespace
//! between the generator and the sink), is measured, and tears itself down so the next one
//! finds the node as the topology left it: no XDP program, no firewall rules, forwarding off.
//!
//! | name | what forwards generator → sink | policy for "N rules" |
//! |---|---|---|
//! | `kernel-forward` | kernel IP forwarding | none |
//! | `iptables` | kernel forwarding + iptables (nft backend) | N source-address rules, optionally behind a conntrack ESTABLISHED rule |
//! | `nftables` | kernel forwarding + nftables | one rule, a set of N source addresses |
//! | `ovs-afxdp` | Open vSwitch userspace datapath, AF_XDP ports, PMD on the node core | N OpenFlow rules |
//! | `xdp-redirect-bare` | `bare_redirect`: devmap `XDP_REDIRECT` | none |
//! | `afxdp-bare` | `lab_xsk` + a plain AF_XDP forwarder thread on the node core | none |
//! | `sluice-kernel` | sluice's in-kernel XDP path | N policy entries, N/10 identities |
//! | `sluice-afxdp` | sluice's AF_XDP fast path, one worker on the node core | same |

use std::collections::BTreeMap;

use perf::CoreStats;
use serde::{Deserialize, Serialize};

use crate::cpu::Task;
use crate::error::Result;
use crate::generator::TrafficSpec;
use crate::topology::Topology;

pub mod afxdp_bare;
pub mod bare;
pub mod kernel;
pub mod ovs;
pub mod sluice;

/// Every system's name, in the order the lab runs them.
pub const ALL: [&str; 8] = [
    "kernel-forward",
    "iptables",
    "nftables",
    "ovs-afxdp",
    "xdp-redirect-bare",
    "afxdp-bare",
    "sluice-kernel",
    "sluice-afxdp",
];

/// One measurement of `system` in `lab` (whose topology `topology` picks): stops first if the
/// lab was interrupted, sets the system up with `rules` rules for `spec`, runs `measure`, and
/// tears the system down on every path, also when setting it up fails. The measurement's
/// error wins over the teardown's.
pub fn measure_once<L, T>(
    lab: &mut L,
    topology: fn(&L) -> &Topology,
    system: &mut dyn System,
    rules: usize,
    spec: &TrafficSpec,
    measure: impl FnOnce(&mut L, &mut dyn System) -> Result<T>,
) -> Result<T> {
    crate::netns::check_interrupted()?;
    system.setup(topology(lab), rules, spec).inspect_err(|_| {
        let _ = system.teardown(topology(lab));
    })?;
    let result = measure(lab, system);
    let down = system.teardown(topology(lab));
    let m = result?;
    down?;
    Ok(m)
}

/// What a system reports about one measured period besides rates and CPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeriodExtras {
    /// Frames lost at the system's AF_XDP sockets over the period (rx_dropped + rx_ring_full).
    pub socket_lost: Option<u64>,
    /// The system's per-core statistics over the period (sluice's fast path).
    pub core: Option<CoreStats>,
    /// Named counters over the period (e.g. sluice's `CNT_*` slots, worker counters).
    pub counters: BTreeMap<String, u64>,
}

/// A system under test.
pub trait System {
    /// Its name (one of [`ALL`]).
    fn name(&self) -> &'static str;

    /// Which variant (empty, `conntrack-first`, `umem=shared`, …).
    fn variant(&self) -> String {
        String::new()
    }

    /// Whether its work depends on the number of rules (`false`: measured once per run and
    /// reported for every rule count).
    fn has_rules(&self) -> bool {
        true
    }

    /// Sets up forwarding generator → sink with `rules` rules for traffic like `spec`.
    fn setup(&mut self, topology: &Topology, rules: usize, spec: &TrafficSpec) -> Result<()>;

    /// Nice value for the node's NAPI kthreads while this system runs (`None`: the
    /// topology's, −20).
    fn napi_nice(&self) -> Option<i32> {
        None
    }

    /// Userspace threads doing the system's packet work (for CPU accounting).
    fn user_threads(&self) -> Vec<Task> {
        Vec::new()
    }

    /// Marks the start of a measured period.
    fn begin_period(&mut self) -> Result<()> {
        Ok(())
    }

    /// What the system saw since [`System::begin_period`].
    fn end_period(&mut self) -> Result<PeriodExtras> {
        Ok(PeriodExtras::default())
    }

    /// Undoes [`System::setup`] (keeping what is costly to rebuild and does not touch the
    /// node, such as compiled state or daemons).
    fn teardown(&mut self, topology: &Topology) -> Result<()>;

    /// Releases everything (daemons, BPF objects); called once at the end.
    fn shutdown(&mut self) {}

    /// Its identity state, where it can change while traffic flows (sluice's two datapaths):
    /// the update storm and the TCP scenario's extra policy go through it.
    fn live_state(&mut self) -> Option<&mut dyn sluice::LiveState> {
        None
    }
}

/// The display label of a system and variant: `iptables (conntrack-first)`.
pub fn label(name: &str, variant: &str) -> String {
    if variant.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({variant})")
    }
}
