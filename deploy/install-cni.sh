#!/bin/sh
# Init step of the DaemonSet: copies sluice-cni to the host's CNI directory and chains it after
# the main plugin of the node's first conflist (it must run after the plugin that creates the
# pod's veth, e.g. ptp). Idempotent.
set -eu
bin_dir="${CNI_BIN_DIR:-/host/opt/cni/bin}"
conf_dir="${CNI_CONF_DIR:-/host/etc/cni/net.d}"
cp /usr/local/bin/sluice-cni "$bin_dir/sluice-cni.tmp"
mv "$bin_dir/sluice-cni.tmp" "$bin_dir/sluice-cni"
conf=$(ls "$conf_dir"/*.conflist 2>/dev/null | grep -v sluice | head -n 1 || true)
if [ -z "$conf" ]; then
    echo "no .conflist in $conf_dir: install the main CNI plugin first" >&2
    exit 1
fi
out="$conf_dir/00-sluice.conflist"
jq '.plugins += [{"type": "sluice-cni", "agentSocket": "/run/sluice/agent.sock", "timeoutSeconds": 10}]
    | .plugins |= unique_by(.type)' "$conf" > "$out.tmp"
mv "$out.tmp" "$out"
echo "chained sluice-cni into $out (from $conf)"
