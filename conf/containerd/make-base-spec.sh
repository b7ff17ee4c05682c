#!/usr/bin/env bash
# Generate containerd's base_runtime_spec with leakguard-hook added:
# containerd's own default spec (`ctr oci spec`) merged with hooks.json.
#   make-base-spec.sh [output]   (default /etc/containerd/leakguard-base-spec.json)
# Needs ctr (ships with containerd) and jq. Re-run after upgrading containerd,
# then restart containerd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-/etc/containerd/leakguard-base-spec.json}"
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
ctr oci spec |
	jq --slurpfile h "$here/hooks.json" \
		'.hooks.createRuntime = ((.hooks.createRuntime // []) + $h[0].hooks.createRuntime)' >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out; set base_runtime_spec to it (see config.toml) and restart containerd"
