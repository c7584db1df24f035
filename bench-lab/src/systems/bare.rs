//! `xdp-redirect-bare`: the bare devmap `XDP_REDIRECT` program (`xdp-redirect/bpf/
//! bare_redirect.c`), the physical limit of forwarding between veths here. It redirects IPv4
//! only (IPv6 goes to the stack, which does not forward with forwarding off).

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::Ebpf;
use aya::maps::Map;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};

use crate::error::{LabError, Result};
use crate::generator::TrafficSpec;
use crate::systems::System;
use crate::topology::Topology;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Sets `bare_devmap[key] = ifindex` with no devmap program. aya creates DEVMAP_HASH maps with
/// the 8-byte `struct bpf_devmap_val` (ifindex, program fd) on kernels that support devmap
/// programs, whatever the object declares, so the value written is always 8 bytes with program
/// fd 0 (none); a kernel that kept the 4-byte value reads only the ifindex. Writing a bare u32
/// made the kernel read 4 stray stack bytes as a program fd (EINVAL when they were not 0).
fn map_update_devmap(map_fd: RawFd, key: u32, ifindex: u32) -> std::io::Result<()> {
    let value: [u32; 2] = [ifindex, 0];
    let attr = MapElemAttr {
        map_fd: map_fd as u32,
        pad: 0,
        key: (&raw const key) as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: key and value outlive the call; value covers both possible value sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &raw const attr,
            size_of::<MapElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bare redirect program, loaded once, attached per measurement.
#[derive(Default)]
pub struct BareRedirect {
    ebpf: Option<Ebpf>,
    links: Vec<XdpLinkId>,
}

impl std::fmt::Debug for BareRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareRedirect")
            .field("attached", &self.links.len())
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> LabError {
    LabError::system("xdp-redirect-bare", e.to_string())
}

impl BareRedirect {
    fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
        ebpf.program_mut("bare_redirect")
            .ok_or_else(|| err("bare_redirect missing from its object"))?
            .try_into()
            .map_err(err)
    }
}

impl System for BareRedirect {
    fn name(&self) -> &'static str {
        "xdp-redirect-bare"
    }

    fn has_rules(&self) -> bool {
        false
    }

    fn setup(&mut self, topology: &Topology, _rules: usize, _spec: &TrafficSpec) -> Result<()> {
        if self.ebpf.is_none() {
            let mut ebpf = Ebpf::load(xdp_redirect::BARE_REDIRECT_OBJECT).map_err(err)?;
            Self::program(&mut ebpf)?.load().map_err(err)?;
            self.ebpf = Some(ebpf);
        }
        let ebpf = self.ebpf.as_mut().ok_or_else(|| err("not loaded"))?;
        let fd = match ebpf.map("bare_devmap") {
            Some(Map::DevMapHash(d)) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(err("bare_devmap missing or not a DEVMAP_HASH")),
        };
        // Generator 0 → the sink; with several pairs, each generator → its pair's sink.
        let routes: Vec<(u32, u32)> = (0..topology.pairs())
            .filter_map(|i| topology.pair(i))
            .map(|(g, s)| (g.host_ifindex, s.host_ifindex))
            .collect();
        let devs: Vec<u32> = topology.node_devs().iter().map(|d| d.1).collect();
        let prog = Self::program(ebpf)?;
        // A devmap resolves ifindex values in the updater's namespace: update from the node.
        let links = topology.node.run(|| {
            for &(gen_if, sink_if) in &routes {
                map_update_devmap(fd, gen_if, sink_if)
                    .map_err(|e| err(format!("bare_devmap[{gen_if}] = {sink_if}: {e}")))?;
            }
            devs.iter()
                .map(|&i| {
                    prog.attach_to_if_index(i, XdpMode::Driver)
                        .map_err(|e| err(format!("attaching to ifindex {i}: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        self.links = links;
        Ok(())
    }

    fn teardown(&mut self, _topology: &Topology) -> Result<()> {
        let links = std::mem::take(&mut self.links);
        if let Some(ebpf) = self.ebpf.as_mut() {
            let prog = Self::program(ebpf)?;
            for link in links {
                prog.detach(link).map_err(err)?;
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        self.ebpf = None;
    }
}
