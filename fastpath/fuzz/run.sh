#!/usr/bin/env bash
# Runs the `parse` fuzz target for SECONDS (default 60), starting from the checked-in seeds in
# corpus/parse/ (what it finds is added there too, and ignored by git). Exits non-zero on a
# crash, leaving the input in artifacts/parse/.
#
# The toolchain is stable; cargo-fuzz needs nightly flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 allows. cargo-fuzz is installed when missing (0.13.2 builds on 1.95).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

CARGO_FUZZ_VERSION=0.13.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# cargo-fuzz finds fuzz/ below the crate it is run from.
cd "$here/.."
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run parse "$here/corpus/parse" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=4096 -print_final_stats=1
