//! The policy each system enforces, at a given scale, as each system's own input: an
//! `iptables-restore` file, an `nft -f` script, an `ovs-ofctl add-flows` file, and sluice's
//! policies (CiliumNetworkPolicy YAML).
//!
//! "N rules" means the same thing everywhere it can: N − 1 entries for other source addresses
//! (alternately ACCEPT and DROP; addresses from `10.130.0.0/15`, which no lab pod uses) and one
//! entry that allows the generator's flows (its source block → the sink, UDP port 9), checked
//! last where rules are evaluated in order. nftables holds the N source addresses in one set
//! matched by one rule. For sluice, N is the number of policy entries, with N/10 identities:
//! see [`SluicePlan`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::topology::v6_of;

/// The first of the non-matching source addresses.
pub const OTHERS_BASE: Ipv4Addr = Ipv4Addr::new(10, 130, 0, 0);

/// The `i`-th non-matching source address (i < 131,072).
pub fn other_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(OTHERS_BASE) + i as u32)
}

/// The flows a policy must let through: the generator's source block to the sink's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allow {
    /// First source address of the generator.
    pub src: Ipv4Addr,
    /// Prefix length covering the generator's source addresses (IPv4 terms).
    pub src_len: u8,
    /// The sink.
    pub dst: Ipv4Addr,
    /// UDP destination port.
    pub port: u16,
    /// Rules for IPv6 (the `fd00::` twins of the addresses) instead of IPv4.
    pub ipv6: bool,
}

impl Allow {
    fn addr(&self, v4: Ipv4Addr) -> IpAddr {
        if self.ipv6 {
            v6_of(v4).into()
        } else {
            v4.into()
        }
    }

    fn host_len(&self) -> u8 {
        if self.ipv6 { 128 } else { 32 }
    }

    /// The generator's block as `addr/len` in this family.
    pub fn src_block(&self) -> String {
        let len = if self.ipv6 {
            self.src_len + 96
        } else {
            self.src_len
        };
        format!("{}/{len}", self.addr(self.src))
    }

    /// The `i`-th other address as `addr/len` (host route) in this family.
    pub fn other(&self, i: usize) -> String {
        format!("{}/{}", self.addr(other_v4(i)), self.host_len())
    }

    fn dst_text(&self) -> String {
        format!("{}/{}", self.addr(self.dst), self.host_len())
    }
}

/// An `iptables-restore` (or `ip6tables-restore`) input for the filter table: policy DROP on
/// FORWARD, `rules − 1` rules for other source addresses, then the rule allowing the
/// generator; with `conntrack_first`, `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`
/// comes first.
pub fn iptables_restore(rules: usize, allow: &Allow, conntrack_first: bool) -> String {
    let mut s = String::with_capacity(rules * 40 + 256);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if conntrack_first {
        s.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    }
    for i in 0..rules.saturating_sub(1) {
        let target = if i % 2 == 0 { "ACCEPT" } else { "DROP" };
        let _ = writeln!(s, "-A FORWARD -s {} -j {target}", allow.other(i));
    }
    let _ = writeln!(
        s,
        "-A FORWARD -s {} -d {} -p udp -m udp --dport {} -j ACCEPT",
        allow.src_block(),
        allow.dst_text(),
        allow.port
    );
    s.push_str("COMMIT\n");
    s
}

/// Name of the lab's nftables table (family `inet`).
pub const NFT_TABLE: &str = "blab";

/// An `nft -f` script: table `inet blab` with a set of `rules` source addresses (`rules − 1`
/// others and the generator's block) and a forward chain (policy drop) with one rule
/// accepting set members to the sink's port.
pub fn nft_script(rules: usize, allow: &Allow) -> String {
    let (family, kind) = if allow.ipv6 {
        ("ip6", "ipv6_addr")
    } else {
        ("ip", "ipv4_addr")
    };
    let interval = allow.src_len < 32;
    let mut elements: Vec<String> = (0..rules.saturating_sub(1))
        .map(|i| {
            let o = allow.other(i);
            o.split('/').next().unwrap_or(&o).to_owned()
        })
        .collect();
    elements.push(if interval {
        allow.src_block()
    } else {
        allow.addr(allow.src).to_string()
    });
    let mut s = String::with_capacity(rules * 16 + 512);
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    let _ = writeln!(
        s,
        "  set allowed {{\n    type {kind}\n{}    elements = {{ {} }}\n  }}",
        if interval { "    flags interval\n" } else { "" },
        elements.join(", ")
    );
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority 0; policy drop;\n    {family} saddr @allowed {family} daddr {} udp dport {} accept\n  }}\n}}",
        allow.addr(allow.dst),
        allow.port
    );
    s
}

/// OpenFlow port numbers the lab requests for the generator-facing and sink-facing ports.
pub const OVS_GEN_PORT: u16 = 1;
/// See [`OVS_GEN_PORT`].
pub const OVS_SINK_PORT: u16 = 2;

/// An `ovs-ofctl add-flows` file: `rules − 1` flows for other sources (alternately output to
/// the sink and drop), one flow for the generator's block to the sink's UDP port (higher
/// priority, so order does not matter), and a lowest-priority drop.
pub fn ovs_flows(rules: usize, allow: &Allow) -> String {
    let (ip, udp, src, dst) = if allow.ipv6 {
        ("ipv6", "udp6", "ipv6_src", "ipv6_dst")
    } else {
        ("ip", "udp", "nw_src", "nw_dst")
    };
    let mut s = String::with_capacity(rules * 64 + 256);
    for i in 0..rules.saturating_sub(1) {
        let action = if i % 2 == 0 {
            format!("output:{OVS_SINK_PORT}")
        } else {
            "drop".into()
        };
        let _ = writeln!(
            s,
            "table=0,priority=100,{ip},in_port={OVS_GEN_PORT},{src}={},actions={action}",
            allow.other(i)
        );
    }
    let _ = writeln!(
        s,
        "table=0,priority=200,{udp},in_port={OVS_GEN_PORT},{src}={},{dst}={},tp_dst={},actions=output:{OVS_SINK_PORT}",
        allow.src_block(),
        allow.addr(allow.dst),
        allow.port
    );
    s.push_str("table=0,priority=0,actions=drop\n");
    s
}

/// How sluice's state is built for "N rules": `groups` remote identities (label `app=rG`);
/// each group's policy admits the next `peers` groups on `ports` ports (alternately TCP and
/// UDP from 8000), so the policy map holds `groups × peers × ports` entries, plus the rule
/// that lets the generator reach the sink on UDP 9. `groups` = max(1, N/10), `peers` =
/// min(5, groups), `ports` = ⌈N / (groups × peers)⌉: 10 → 1 × 1 × 10, 1,000 → 100 × 5 × 2,
/// 10,000 → 1,000 × 5 × 2, 100,000 → 10,000 × 5 × 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SluicePlan {
    /// Remote identities.
    pub groups: usize,
    /// Peers each group admits.
    pub peers: usize,
    /// Ports per peer.
    pub ports: usize,
}

impl SluicePlan {
    /// The plan for `rules` policy entries.
    pub fn for_rules(rules: usize) -> Self {
        let groups = (rules / 10).max(1);
        let peers = groups.min(5);
        let ports = rules.div_ceil(groups * peers).max(1);
        SluicePlan {
            groups,
            peers,
            ports,
        }
    }

    /// Policy entries the plan gives (without the generator's rule).
    pub fn entries(&self) -> usize {
        self.groups * self.peers * self.ports
    }

    /// The CiliumNetworkPolicy of group `g`.
    pub fn group_policy(&self, g: usize) -> String {
        let peers: Vec<String> = (1..=self.peers)
            .map(|k| format!("r{}", (g + k) % self.groups))
            .collect();
        let ports: Vec<String> = (0..self.ports)
            .map(|j| {
                let proto = if j % 2 == 0 { "TCP" } else { "UDP" };
                format!("{{port: \"{}\", protocol: {proto}}}", 8000 + j)
            })
            .collect();
        format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: group-{g}, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: r{g}}}}}
  ingress:
  - fromEndpoints: [{{matchExpressions: [{{key: app, operator: In, values: [{}]}}]}}]
    toPorts: [{{ports: [{}]}}]
",
            peers.join(", "),
            ports.join(", ")
        )
    }
}

/// The policy that lets the generator (`app=gen`) reach the sink (`app=sink`) on UDP `port`.
pub fn sink_policy(port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: sink-from-gen, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: sink}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: gen}}}}]
    toPorts: [{{ports: [{{port: \"{port}\", protocol: UDP}}]}}]
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(ipv6: bool) -> Allow {
        Allow {
            src: Ipv4Addr::new(10, 128, 0, 32),
            src_len: 32,
            dst: Ipv4Addr::new(10, 128, 0, 2),
            port: 9,
            ipv6,
        }
    }

    #[test]
    fn iptables_has_n_rules_with_the_allow_last_and_optional_conntrack_first() {
        let text = iptables_restore(1000, &allow(false), false);
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(rules.len(), 1000);
        assert_eq!(rules[0], "-A FORWARD -s 10.130.0.0/32 -j ACCEPT");
        assert_eq!(rules[1], "-A FORWARD -s 10.130.0.1/32 -j DROP");
        assert!(rules[999].starts_with("-A FORWARD -s 10.128.0.32/32 -d 10.128.0.2/32 -p udp"));
        assert!(text.contains(":FORWARD DROP"));
        let ct = iptables_restore(10, &allow(false), true);
        let rules: Vec<&str> = ct.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(rules.len(), 11);
        assert!(rules[0].contains("--ctstate ESTABLISHED,RELATED"));
        let v6 = iptables_restore(2, &allow(true), false);
        assert!(v6.contains("-s fd00::a82:0/128 -j ACCEPT"), "{v6}");
        assert!(
            v6.contains("-s fd00::a80:20/128 -d fd00::a80:2/128"),
            "{v6}"
        );
    }

    #[test]
    fn nft_set_holds_n_elements_and_intervals_only_for_blocks() {
        let text = nft_script(10, &allow(false));
        let elements = text
            .split("elements = {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .expect("elements");
        assert_eq!(elements.split(',').count(), 10);
        assert!(elements.contains("10.128.0.32"));
        assert!(!text.contains("flags interval"));
        assert!(text.contains("ip saddr @allowed ip daddr 10.128.0.2 udp dport 9 accept"));
        let block = Allow {
            src_len: 27,
            ..allow(false)
        };
        let text = nft_script(3, &block);
        assert!(text.contains("flags interval") && text.contains("10.128.0.32/27"));
        assert!(nft_script(2, &allow(true)).contains("ip6 saddr @allowed"));
    }

    #[test]
    fn ovs_flows_cover_n_rules_and_a_default_drop() {
        let text = ovs_flows(100, &allow(false));
        assert_eq!(text.lines().count(), 101);
        assert!(text.contains("priority=200,udp,in_port=1,nw_src=10.128.0.32/32,nw_dst=10.128.0.2,tp_dst=9,actions=output:2"));
        assert!(text.ends_with("priority=0,actions=drop\n"));
    }

    #[test]
    fn sluice_plans_match_the_documented_mapping() {
        for (rules, plan) in [
            (10, (1, 1, 10)),
            (1_000, (100, 5, 2)),
            (10_000, (1_000, 5, 2)),
            (100_000, (10_000, 5, 2)),
        ] {
            let p = SluicePlan::for_rules(rules);
            assert_eq!((p.groups, p.peers, p.ports), plan);
            assert_eq!(p.entries(), rules);
        }
        let p = SluicePlan::for_rules(1_000);
        let yaml = p.group_policy(99);
        assert!(yaml.contains("values: [r0, r1, r2, r3, r4]"), "{yaml}");
        assert!(yaml.contains("{port: \"8001\", protocol: UDP}"));
    }
}
