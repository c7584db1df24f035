//! Kernel forwarding with and without a firewall: `kernel-forward`, `iptables`, `nftables`.

use crate::error::{LabError, Result};
use crate::generator::{TrafficSpec, source_block};
use crate::netns;
use crate::rules::{self, Allow};
use crate::systems::System;
use crate::topology::Topology;

/// The policy's allowed flows for `spec` in `topology`.
pub fn allow_for(topology: &Topology, spec: &TrafficSpec) -> Allow {
    let (src, src_len) = source_block(&topology.gens[0], spec);
    Allow {
        src,
        src_len,
        dst: topology.sink.v4[0],
        port: crate::generator::LAB_PORT,
        ipv6: spec.ipv6,
    }
}

/// Kernel IP forwarding, no policy.
#[derive(Debug, Default)]
pub struct KernelForward;

impl System for KernelForward {
    fn name(&self) -> &'static str {
        "kernel-forward"
    }

    fn has_rules(&self) -> bool {
        false
    }

    fn setup(&mut self, topology: &Topology, _rules: usize, _spec: &TrafficSpec) -> Result<()> {
        topology.set_forwarding(true)
    }

    fn teardown(&mut self, topology: &Topology) -> Result<()> {
        topology.set_forwarding(false)
    }
}

/// Kernel forwarding + iptables (the nft backend of Debian's `iptables`): N rules matching
/// the source address, optionally behind `-m conntrack --ctstate ESTABLISHED,RELATED -j
/// ACCEPT`.
#[derive(Debug)]
pub struct Iptables {
    /// Put the conntrack ESTABLISHED,RELATED rule first.
    pub conntrack_first: bool,
    ipv6: bool,
}

impl Iptables {
    /// iptables with or without the conntrack shortcut.
    pub fn new(conntrack_first: bool) -> Self {
        Iptables {
            conntrack_first,
            ipv6: false,
        }
    }

    fn restore_cmd(&self) -> &'static str {
        if self.ipv6 {
            "ip6tables-restore"
        } else {
            "iptables-restore"
        }
    }
}

/// Installs a Debian package when `program` is missing.
pub fn ensure_program(program: &str, package: &str) -> Result<()> {
    if netns::have(program) {
        return Ok(());
    }
    netns::run(&["apt-get", "install", "-y", "-q", package]).map_err(|e| {
        LabError::system(
            package.to_owned(),
            format!("`{program}` is missing and `apt-get install -y {package}` failed: {e}"),
        )
    })?;
    if netns::have(program) {
        Ok(())
    } else {
        Err(LabError::system(
            package.to_owned(),
            format!("`{program}` still missing after installing {package}"),
        ))
    }
}

impl System for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn variant(&self) -> String {
        if self.conntrack_first {
            "conntrack-first".into()
        } else {
            String::new()
        }
    }

    fn setup(&mut self, topology: &Topology, rules: usize, spec: &TrafficSpec) -> Result<()> {
        ensure_program("iptables-restore", "iptables")?;
        self.ipv6 = spec.ipv6;
        let version = netns::run(&["iptables", "--version"])?;
        if !version.contains("nf_tables") {
            return Err(LabError::system(
                "iptables",
                format!("expected the nft backend, found {version:?}"),
            ));
        }
        let text = rules::iptables_restore(rules, &allow_for(topology, spec), self.conntrack_first);
        topology
            .node
            .exec_with_input(&[self.restore_cmd()], &text)?;
        topology.set_forwarding(true)
    }

    fn teardown(&mut self, topology: &Topology) -> Result<()> {
        topology.set_forwarding(false)?;
        let empty =
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        topology
            .node
            .exec_with_input(&[self.restore_cmd()], empty)?;
        if self.conntrack_first && netns::have("conntrack") {
            // Flushing an empty table exits non-zero on some versions: ignore.
            let _ = topology.node.exec(&["conntrack", "-F"]);
        }
        Ok(())
    }
}

/// Kernel forwarding + nftables: one rule matching a set of N source addresses.
#[derive(Debug, Default)]
pub struct Nftables;

impl System for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn setup(&mut self, topology: &Topology, rules: usize, spec: &TrafficSpec) -> Result<()> {
        ensure_program("nft", "nftables")?;
        let text = rules::nft_script(rules, &allow_for(topology, spec));
        topology.node.exec_with_input(&["nft", "-f", "-"], &text)?;
        topology.set_forwarding(true)
    }

    fn teardown(&mut self, topology: &Topology) -> Result<()> {
        topology.set_forwarding(false)?;
        topology
            .node
            .exec(&["nft", "delete", "table", "inet", rules::NFT_TABLE])
            .map(drop)
    }
}
