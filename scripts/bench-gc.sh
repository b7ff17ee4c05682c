#!/usr/bin/env bash
# GC benchmark: leakguard's CNI GC over 5,000 records, run inside a
# throw-away netns (the plugin's netlink look-ups never reach this machine's
# own interfaces). Usage: scripts/bench-gc.sh [leakguard-binary]
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=${1:-bin/leakguard}
bench=bin/test/gcbench
[[ -x $bench ]] || go build -o "$bench" ./test/cmd/gcbench
node="lg-gcbench-$$"
ip netns add "$node"
trap 'ip netns del "$node" 2>/dev/null || true' EXIT
# shellcheck disable=SC2086 # GCBENCH_ARGS is a list of flags
ip netns exec "$node" "$bench" -leakguard "$(realpath "$plugin")" ${GCBENCH_ARGS:-}
