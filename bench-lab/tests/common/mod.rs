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
