//! What the lab tests share: whether the lab can run here, and which lab namespaces belong to
//! this test process.

use bench_lab::netns::{self, PREFIX};

/// The lab namespaces this process created (its prefix and pid, not a longer pid's).
pub(crate) fn ours() -> Vec<String> {
    let mine = format!("{PREFIX}{}", std::process::id());
    netns::lab_namespaces()
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&mine)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect()
}

/// Whether the lab can run here (root with `ip` and `ethtool`); when not, prints that the
/// test is skipped and what it `needs` them for (e.g. "to create namespaces").
pub(crate) fn privileged(needs: &str) -> bool {
    let ok = netns::is_root() && netns::have("ip") && netns::have("ethtool");
    if !ok {
        eprintln!("skipped: needs root with `ip` and `ethtool` {needs}");
    }
    ok
}

/// What [`send_afxdp`] saw: the generator's final counters, the sink's counters before and what
/// it counted meanwhile, the sequence number the generator started from, and whether its socket
/// was in copy mode.
#[allow(dead_code)] // Used by the test binaries that send traffic, not by every one.
pub(crate) struct Sent {
    pub(crate) state: bench_lab::generator::GenState,
    pub(crate) sink0: bench_lab::generator::SinkCounters,
    pub(crate) got: bench_lab::generator::SinkCounters,
    pub(crate) seq0: u64,
    pub(crate) copy_mode: bool,
}

/// Sends `spec`'s frames from `lab`'s first generator pod with the AF_XDP generator until the
/// sink has counted `want` lab frames or 5 s have passed (bounded by both), then stops it and
/// waits 100 ms for frames still in flight.
#[allow(dead_code)] // Used by the test binaries that send traffic, not by every one.
pub(crate) fn send_afxdp(
    lab: &bench_lab::scenario::Lab,
    spec: &bench_lab::generator::TrafficSpec,
    want: u64,
) -> Sent {
    use bench_lab::afxdp_gen::{AfxdpGenConfig, AfxdpGenerator, next_seq};
    use std::time::{Duration, Instant};

    let sink0 = lab.programs.sink().expect("sink");
    let seq0 = next_seq(&lab.programs).expect("sequence");
    let mut generator = AfxdpGenerator::start(
        AfxdpGenConfig::for_pod(
            &lab.topology.gens[0],
            &lab.topology.sink,
            spec,
            lab.config.topology.gen_cpu,
            0,
            seq0,
        )
        .expect("config"),
    )
    .expect("AF_XDP socket on the generator's veth");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.programs.sink().expect("sink").lab - sink0.lab < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    generator.stop().expect("generator stops");
    std::thread::sleep(Duration::from_millis(100));
    Sent {
        state: generator.state(),
        got: lab.programs.sink().expect("sink").since(&sink0),
        sink0,
        seq0,
        copy_mode: generator.stats().copy_mode,
    }
}
