//! Verdicts: what was decided, why, and by which rule.
//!
//! [`DropReason`] is the one numbered list of drop reasons that the XDP program (C) and the
//! userspace path share; flow output prints its names. Numbers are part of the map ABI and
//! never change meaning.

use std::fmt;

use crate::policy::{Action, Direction};

/// Why a packet was dropped. The numbers are shared with the BPF program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// The endpoint is in default deny and no rule allows the traffic.
    PolicyDenied = 1,
    /// A deny rule matched.
    PolicyDenyRule = 2,
    /// The source or destination identity is unknown and policy does not allow `world`.
    UnknownIdentity = 3,
    /// The destination address belongs to no endpoint and cannot be routed.
    StaleOrUnroutableIp = 4,
    /// The packet could not be parsed.
    Malformed = 5,
    /// The source address is not one of the sending endpoint's addresses.
    SpoofedSource = 6,
    /// A non-first IP fragment arrived with no state from its first fragment.
    FragmentWithoutState = 7,
    /// The identity number is claimed by two label sets; both fail closed.
    IdentityCollision = 8,
    /// No worker serves the queue and the kernel path is configured to fail closed.
    NoWorker = 9,
}

impl DropReason {
    /// Every reason, in number order.
    pub const ALL: [DropReason; 9] = [
        DropReason::PolicyDenied,
        DropReason::PolicyDenyRule,
        DropReason::UnknownIdentity,
        DropReason::StaleOrUnroutableIp,
        DropReason::Malformed,
        DropReason::SpoofedSource,
        DropReason::FragmentWithoutState,
        DropReason::IdentityCollision,
        DropReason::NoWorker,
    ];

    /// The stable name flow output uses.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "POLICY_DENIED",
            DropReason::PolicyDenyRule => "POLICY_DENY_RULE",
            DropReason::UnknownIdentity => "UNKNOWN_IDENTITY",
            DropReason::StaleOrUnroutableIp => "STALE_OR_UNROUTABLE_IP",
            DropReason::Malformed => "MALFORMED_PACKET",
            DropReason::SpoofedSource => "SPOOFED_SOURCE",
            DropReason::FragmentWithoutState => "FRAGMENT_WITHOUT_STATE",
            DropReason::IdentityCollision => "IDENTITY_COLLISION",
            DropReason::NoWorker => "NO_WORKER",
        }
    }

    /// The reason with this number.
    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == n)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How specific the deciding rule was (Cilium's policy match types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKind {
    /// A specific peer and specific ports.
    L3L4,
    /// Any peer, specific ports.
    L4Only,
    /// A specific peer, every port of one protocol.
    L3Proto,
    /// Any peer, every port of one protocol.
    ProtoOnly,
    /// A specific peer, every protocol and port.
    L3Only,
    /// Any peer, any port.
    All,
    /// No rule matched (default deny, or no policy selects the endpoint).
    None,
}

impl MatchKind {
    /// The upper-case name used in output.
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::L3L4 => "L3_L4",
            MatchKind::L4Only => "L4_ONLY",
            MatchKind::L3Proto => "L3_PROTO",
            MatchKind::ProtoOnly => "PROTO_ONLY",
            MatchKind::L3Only => "L3_ONLY",
            MatchKind::All => "ALL",
            MatchKind::None => "NONE",
        }
    }
}

/// Index of a compiled rule in the rule table of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

/// The decision for one direction (egress of the source, or ingress of the destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectionVerdict {
    /// Allow or deny.
    pub action: Action,
    /// The deciding rule: the matching rule, or for default deny the rule that turned it on.
    pub rule: Option<RuleId>,
    /// How specific the match was.
    pub match_kind: MatchKind,
    /// Set when denied.
    pub drop_reason: Option<DropReason>,
    /// Whether any policy selects the endpoint in this direction.
    pub enforced: bool,
}

impl DirectionVerdict {
    /// Allowed because no policy selects the endpoint in this direction.
    pub const NOT_ENFORCED: DirectionVerdict = DirectionVerdict {
        action: Action::Allow,
        rule: None,
        match_kind: MatchKind::None,
        drop_reason: None,
        enforced: false,
    };
}

/// The decision for a packet: both directions combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub action: Action,
    /// The direction that decided: the denying one, else ingress if checked, else egress.
    pub direction: Option<Direction>,
    /// The source endpoint's egress decision, if checked.
    pub egress: Option<DirectionVerdict>,
    /// The destination endpoint's ingress decision, if checked.
    pub ingress: Option<DirectionVerdict>,
    /// Set when denied.
    pub drop_reason: Option<DropReason>,
}

impl Verdict {
    /// Whether the packet may pass.
    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }

    /// The verdict of the deciding direction.
    pub fn deciding(&self) -> Option<&DirectionVerdict> {
        match self.direction {
            Some(Direction::Egress) => self.egress.as_ref(),
            Some(Direction::Ingress) => self.ingress.as_ref(),
            None => None,
        }
    }

    /// A drop that no rule decided (malformed, spoofed, collision, …).
    pub fn dropped(reason: DropReason) -> Self {
        Verdict {
            action: Action::Deny,
            direction: None,
            egress: None,
            ingress: None,
            drop_reason: Some(reason),
        }
    }
}
