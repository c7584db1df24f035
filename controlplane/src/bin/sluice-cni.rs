//! `sluice-cni`: the chained CNI plugin that tells the sluice agent where a pod is attached
//! and returns once its endpoint is programmed. See [`controlplane::cni`].

fn main() {
    std::process::exit(controlplane::cni::main_with_io());
}
