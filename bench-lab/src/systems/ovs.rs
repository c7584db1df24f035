//! `ovs-afxdp`: Open vSwitch's userspace datapath (`datapath_type=netdev`) with `type=afxdp`
//! ports on the node's veths (copy mode: veth has no zero-copy), its PMD thread on the node
//! core (`pmd-cpu-mask`), the policy as N OpenFlow rules.
//!
//! The daemons are the lab's own: `ovsdb-server` and `ovs-vswitchd` run with a database,
//! sockets, pid and log files in a private directory (`OVS_RUNDIR` etc.), `ovs-vswitchd` inside
//! the node namespace (AF_XDP ports open interfaces by name in the daemon's namespace), so a
//! system Open vSwitch is never touched. Debian's `openvswitch-switch` is installed on demand.
//! They start on first use and stop in [`System::shutdown`]; the bridge and its ports (and with
//! them the XDP programs OVS attached) are removed after every measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cpu::{self, Task};
use crate::error::{LabError, Result};
use crate::generator::TrafficSpec;
use crate::netns;
use crate::rules::{self, OVS_GEN_PORT, OVS_SINK_PORT};
use crate::systems::System;
use crate::systems::kernel::{allow_for, ensure_program};
use crate::topology::Topology;

const BRIDGE: &str = "blabbr";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Open vSwitch with AF_XDP ports.
#[derive(Debug)]
pub struct OvsAfxdp {
    node_cpu: usize,
    dir: PathBuf,
    running: bool,
    vswitchd_pid: Option<i32>,
    ovsdb_pid: Option<i32>,
    bridge: bool,
}

fn err(e: impl std::fmt::Display) -> LabError {
    LabError::system("ovs-afxdp", e.to_string())
}

impl OvsAfxdp {
    /// OVS with its PMD on `node_cpu`, its files under `work_dir/ovs`.
    pub fn new(node_cpu: usize, work_dir: &Path) -> Self {
        OvsAfxdp {
            node_cpu,
            dir: work_dir.join("ovs"),
            running: false,
            vswitchd_pid: None,
            ovsdb_pid: None,
            bridge: false,
        }
    }

    fn env(&self, cmd: &mut Command) {
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR"] {
            cmd.env(var, &self.dir);
        }
    }

    /// Runs an OVS tool with the lab's directories, in namespace `ns` when given.
    fn ovs(&self, ns: Option<&str>, args: &[&str]) -> Result<String> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        self.env(&mut cmd);
        let command = args.join(" ");
        let out = cmd.output().map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            output.truncate(2000);
            return Err(LabError::Command { command, output });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn db(&self) -> String {
        format!("unix:{}/db.sock", self.dir.display())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db={}", self.db());
        let mut full = vec!["ovs-vsctl", db.as_str(), "--timeout=20"];
        full.extend_from_slice(args);
        self.ovs(None, &full)
    }

    fn read_pid(&self, file: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn start(&mut self, topology: &Topology) -> Result<()> {
        ensure_program("ovs-vsctl", "openvswitch-switch")?;
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| LabError::io("OVS directory".into(), e))?;
        let d = self.dir.display().to_string();
        let conf = format!("{d}/conf.db");
        self.ovs(None, &["ovsdb-tool", "create", &conf, SCHEMA])?;
        self.ovs(
            None,
            &[
                "ovsdb-server",
                &conf,
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb-server.pid"),
                &format!("--unixctl={d}/ovsdb-server.ctl"),
                &format!("--log-file={d}/ovsdb-server.log"),
                "--detach",
            ],
        )?;
        self.ovsdb_pid = self.read_pid("ovsdb-server.pid");
        self.vsctl(&["--no-wait", "init"])?;
        let mask = format!("other_config:pmd-cpu-mask=0x{:x}", 1u64 << self.node_cpu);
        self.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", &mask])?;
        self.ovs(
            Some(&topology.node.name),
            &[
                "ovs-vswitchd",
                &self.db(),
                &format!("--pidfile={d}/ovs-vswitchd.pid"),
                &format!("--unixctl={d}/ovs-vswitchd.ctl"),
                &format!("--log-file={d}/ovs-vswitchd.log"),
                "--detach",
            ],
        )?;
        self.vswitchd_pid = self.read_pid("ovs-vswitchd.pid");
        self.running = true;
        Ok(())
    }

    fn pmd_threads(&self) -> Vec<Task> {
        self.vswitchd_pid
            .map(|pid| cpu::threads_named(pid, "pmd"))
            .unwrap_or_default()
    }

    fn remove_bridge(&mut self) -> Result<()> {
        if self.bridge {
            self.vsctl(&["--if-exists", "del-br", BRIDGE])?;
            self.bridge = false;
        }
        Ok(())
    }

    fn kill(pid: Option<i32>) {
        let Some(pid) = pid else {
            return;
        };
        // SAFETY: kill has no memory preconditions; the pid is a daemon this lab started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl System for OvsAfxdp {
    fn name(&self) -> &'static str {
        "ovs-afxdp"
    }

    fn setup(&mut self, topology: &Topology, rules: usize, spec: &TrafficSpec) -> Result<()> {
        if !self.running {
            self.start(topology)?;
        }
        let gen_dev = &topology.gens[0].host_dev;
        let sink_dev = &topology.sink.host_dev;
        let (gp, sp) = (
            format!("ofport_request={OVS_GEN_PORT}"),
            format!("ofport_request={OVS_SINK_PORT}"),
        );
        self.bridge = true;
        self.vsctl(&[
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
            "fail_mode=secure",
            "--",
            "add-port",
            BRIDGE,
            gen_dev,
            "--",
            "set",
            "interface",
            gen_dev,
            "type=afxdp",
            "options:xdp-mode=native",
            &gp,
            "--",
            "add-port",
            BRIDGE,
            sink_dev,
            "--",
            "set",
            "interface",
            sink_dev,
            "type=afxdp",
            "options:xdp-mode=native",
            &sp,
        ])?;
        // Wait until both ports are up in the datapath (an error shows in the Interface row).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            netns::check_interrupted()?;
            let e1 = self.vsctl(&["get", "interface", gen_dev, "error"])?;
            let e2 = self.vsctl(&["get", "interface", sink_dev, "error"])?;
            for e in [&e1, &e2] {
                if !e.trim().is_empty() && e.trim() != "[]" {
                    return Err(err(format!("AF_XDP port: {}", e.trim())));
                }
            }
            let o1 = self.vsctl(&["get", "interface", gen_dev, "ofport"])?;
            let o2 = self.vsctl(&["get", "interface", sink_dev, "ofport"])?;
            if o1.trim() == OVS_GEN_PORT.to_string() && o2.trim() == OVS_SINK_PORT.to_string() {
                break;
            }
            if Instant::now() > deadline {
                return Err(err(format!("ports not ready: ofport {o1:?} {o2:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let flows = rules::ovs_flows(rules, &allow_for(topology, spec));
        let file = self.dir.join("flows.txt");
        std::fs::write(&file, flows).map_err(|e| LabError::io("OVS flows file".into(), e))?;
        let file = file.display().to_string();
        let target = format!("unix:{}/{BRIDGE}.mgmt", self.dir.display());
        self.ovs(None, &["ovs-ofctl", "del-flows", &target])?;
        self.ovs(None, &["ovs-ofctl", "add-flows", &target, &file])?;
        if self.pmd_threads().is_empty() {
            return Err(err("no PMD thread in ovs-vswitchd"));
        }
        Ok(())
    }

    fn user_threads(&self) -> Vec<Task> {
        self.pmd_threads()
    }

    /// The PMD thread runs at normal priority and busy-polls; NAPI at −20 would take ~99 % of
    /// the shared core from it (CFS weights 88,761 : 1,024) and starve the AF_XDP rings, so
    /// NAPI keeps its normal priority, as Open vSwitch is deployed.
    fn napi_nice(&self) -> Option<i32> {
        Some(0)
    }

    fn teardown(&mut self, topology: &Topology) -> Result<()> {
        self.remove_bridge()?;
        // OVS detaches its XDP programs with the ports; make sure nothing is left for the
        // next system.
        for (dev, _) in topology.node_devs() {
            let _ = topology.node.ip(&["link", "set", "dev", dev, "xdp", "off"]);
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        let _ = self.remove_bridge();
        Self::kill(self.vswitchd_pid.take());
        Self::kill(self.ovsdb_pid.take());
        self.running = false;
    }
}

impl Drop for OvsAfxdp {
    fn drop(&mut self) {
        self.shutdown();
    }
}
