//! `sluice-xdp`: inspect and manage a pinned sluice XDP instance without the agent.
//!
//! ```text
//! sluice-xdp attach   --pin-dir DIR IFACE...   load (re-adopting pinned maps) and attach
//! sluice-xdp detach   --pin-dir DIR IFACE...   detach from interfaces
//! sluice-xdp counters --pin-dir DIR            per-slot packet counters
//! sluice-xdp pressure --pin-dir DIR            map entries / capacity
//! sluice-xdp destroy  --pin-dir DIR            detach everything and remove the pins
//! ```
//! Interfaces are names or indexes in the caller's network namespace; DIR must be on bpffs.

use std::path::PathBuf;
use std::process::ExitCode;

use xdp_redirect::loader::{DatapathSettings, Dataplane, ifindex};

fn usage() -> ExitCode {
    eprintln!("usage: sluice-xdp attach|detach|counters|pressure|destroy --pin-dir DIR [IFACE...]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        return usage();
    };
    let mut pin_dir = None;
    let mut interfaces = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--pin-dir" => pin_dir = rest.next().map(PathBuf::from),
            "-h" | "--help" => return usage(),
            other => interfaces.push(other.to_owned()),
        }
    }
    let Some(pin_dir) = pin_dir else {
        eprintln!("sluice-xdp: --pin-dir is required");
        return usage();
    };
    match run(&command, &pin_dir, &interfaces) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-xdp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(name: &str) -> Result<u32, xdp_redirect::loader::LoaderError> {
    match name.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => ifindex(name),
    }
}

fn run(
    command: &str,
    pin_dir: &std::path::Path,
    interfaces: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut plane = Dataplane::open(pin_dir, DatapathSettings::default())?;
    match command {
        "attach" => {
            for name in interfaces {
                let index = resolve(name)?;
                let mode = plane.attach(index)?;
                println!("{name}: attached ({mode} mode)");
            }
        }
        "detach" => {
            for name in interfaces {
                let index = resolve(name)?;
                plane.attach(index)?;
                plane.detach(index)?;
                println!("{name}: detached");
            }
        }
        "counters" => {
            let counters = plane.counters()?;
            for (slot, value) in counters.slots.iter().enumerate() {
                if value.packets > 0 {
                    println!(
                        "{slot:>3} {:>12} packets {:>14} bytes",
                        value.packets, value.bytes
                    );
                }
            }
        }
        "pressure" => {
            for p in plane.pressure()? {
                println!("{:<16} {:>9} / {}", p.map, p.entries, p.max);
            }
        }
        "destroy" => {
            for name in interfaces {
                plane.attach(resolve(name)?)?;
            }
            plane.destroy()?;
            println!("destroyed {}", pin_dir.display());
        }
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}
