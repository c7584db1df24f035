//! Flow events: what a worker tells the agent about the flows it decides.
//!
//! A worker reports the first packet of each flow (a new tracked connection), every drop
//! (sampled, when configured) and audit verdicts, through its own bounded lock-free queue.
//! A full queue drops the event and counts it in [`FlowEventQueue::lost`]; a worker never
//! blocks on its observers. Events carry numbers (identities, endpoint ids, the deciding
//! rule's attribution); the agent adds names and labels when it reads them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;
use identity_cache::endpoint::EndpointId;
use identity_cache::identity::Identity;
use identity_cache::policy::Direction;
use identity_cache::tables::RuleInfo;
use identity_cache::verdict::{DropReason, MatchKind};

/// What happened to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowVerdict {
    /// Sent on to its destination.
    Forwarded,
    /// Dropped, with a reason.
    Dropped,
    /// Policy would have dropped it, but its endpoint is in audit mode: forwarded.
    Audit,
}

impl FlowVerdict {
    /// The upper-case name used in output.
    pub fn name(self) -> &'static str {
        match self {
            FlowVerdict::Forwarded => "FORWARDED",
            FlowVerdict::Dropped => "DROPPED",
            FlowVerdict::Audit => "AUDIT",
        }
    }
}

/// Where the packet was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObservationPoint {
    /// A fast-path worker (AF_XDP).
    FastPath,
    /// The in-kernel XDP path.
    Kernel,
}

impl ObservationPoint {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            ObservationPoint::FastPath => "fastpath",
            ObservationPoint::Kernel => "kernel",
        }
    }
}

/// Why the flow was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The first packet of a new connection.
    NewFlow,
    /// A dropped packet.
    Drop,
    /// A packet of a known flow whose verdict differs from the flow's last one.
    VerdictChanged,
    /// A packet policy allowed that cannot be tracked (not TCP/UDP/SCTP/ICMP echo).
    Untracked,
}

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPeer {
    /// Address.
    pub ip: IpAddr,
    /// Port (TCP/UDP/SCTP), ICMP type for ICMP, else 0.
    pub port: u16,
    /// Security identity the packet was decided with.
    pub identity: Identity,
    /// The local endpoint with this address, if any.
    pub endpoint: Option<EndpointId>,
}

/// One decided flow, as a worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// Wall-clock time of the decision, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Why it was reported.
    pub kind: EventKind,
    /// The sender.
    pub source: FlowPeer,
    /// The receiver.
    pub destination: FlowPeer,
    /// IP protocol number.
    pub protocol: u8,
    /// TCP flags of the packet (0 for other protocols).
    pub tcp_flags: u8,
    /// The direction that decided (`None` when neither end is enforced).
    pub direction: Option<Direction>,
    /// The verdict.
    pub verdict: FlowVerdict,
    /// Why it was dropped (or would have been, in audit mode).
    pub drop_reason: Option<DropReason>,
    /// The deciding rule (for a default deny, the rule that turned default deny on).
    pub rule: Option<RuleInfo>,
    /// How specific the deciding match was.
    pub match_kind: MatchKind,
    /// Allowed as the reply of a tracked connection, without policy.
    pub is_reply: bool,
    /// Where it was decided.
    pub observation: ObservationPoint,
    /// Interface the packet arrived on.
    pub ingress_ifindex: u32,
    /// Interface it left on (0 when dropped).
    pub egress_ifindex: u32,
    /// Index of the worker that decided it.
    pub worker: u16,
    /// CPU core the worker is pinned to (`u16::MAX` when unpinned).
    pub core: u16,
    /// From the burst's receive time to this packet's decision, nanoseconds.
    pub latency_ns: u32,
    /// Frame length in bytes.
    pub bytes: u16,
}

/// A worker's bounded event queue: lock-free, never blocks the worker.
pub struct FlowEventQueue {
    queue: ArrayQueue<FlowEvent>,
    lost: AtomicU64,
}

impl FlowEventQueue {
    /// A queue of `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        FlowEventQueue {
            queue: ArrayQueue::new(capacity.max(1)),
            lost: AtomicU64::new(0),
        }
    }

    /// Offers an event; a full queue drops it and counts it lost.
    pub fn offer(&self, event: FlowEvent) {
        if self.queue.push(event).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the oldest event.
    pub fn take(&self) -> Option<FlowEvent> {
        self.queue.pop()
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Which flows are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// Report the first packet of each allowed flow (and verdict changes).
    pub allowed_flows: bool,
    /// Report one of every N dropped packets per worker (1: every drop; 0: none).
    pub drop_sample_every: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            allowed_flows: true,
            drop_sample_every: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn event(n: u16) -> FlowEvent {
        let peer = FlowPeer {
            ip: Ipv4Addr::new(10, 0, 0, 1).into(),
            port: n,
            identity: Identity(300),
            endpoint: None,
        };
        FlowEvent {
            time_ns: 0,
            kind: EventKind::Drop,
            source: peer,
            destination: peer,
            protocol: 6,
            tcp_flags: 0,
            direction: None,
            verdict: FlowVerdict::Dropped,
            drop_reason: Some(DropReason::PolicyDenied),
            rule: None,
            match_kind: MatchKind::None,
            is_reply: false,
            observation: ObservationPoint::FastPath,
            ingress_ifindex: 1,
            egress_ifindex: 0,
            worker: 0,
            core: 0,
            latency_ns: 0,
            bytes: 60,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let q = FlowEventQueue::new(2);
        q.offer(event(1));
        q.offer(event(2));
        q.offer(event(3));
        assert_eq!(q.lost(), 1);
        assert_eq!(q.take().map(|e| e.source.port), Some(1));
        assert_eq!(q.take().map(|e| e.source.port), Some(2));
        assert_eq!(q.take(), None);
    }
}
