#!/usr/bin/env bash
# Scan benchmark (called by scripts/bench.sh, or alone as root):
# `leakguardctl scan` on a node with 1,000 veths into 1,000 pod netns, half
# of them leaked (held only by a socket created inside them). Prints the scan's
# wall time (median/max over runs, with and without the re-check delay) and
# peak RSS, and checks that exactly the leaked half is reported; then the
# agent (`leakguardctl serve`): scan time, CPU per scan and at a 60 s
# interval, RSS.
#
# Runs bin/test/scanbench (test/cmd/scanbench) under `ip netns exec` in a
# throw-away netns that plays the node: the private mount namespace `ip netns
# exec` gives it holds the pods' bind mounts, so every pod netns, veth and
# mount vanishes with it. The machine's own interfaces are never touched.
#
# Extra scanbench flags go in SCANBENCH_ARGS (e.g. "-pods 100 -runs 3").
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${LEAKGUARD_BIN_DIR:-$root/bin}
ctl=${1:-$bin/leakguardctl}
prefix=lgscanbench

die() {
	echo "bench-scan: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
for f in "$ctl" "$bin/test/scanbench"; do
	[[ -x $f ]] || die "missing $f (build: go build -o bin/leakguardctl ./plugins/leakguardctl; make test-bins)"
done

# A run killed with SIGKILL cannot clean up: remove netns of runs whose
# script is no longer alive.
for n in $(ip netns list | awk -v p="^$prefix-[0-9]+$" '$1 ~ p {print $1}'); do
	if ! kill -0 "${n#"$prefix"-}" 2>/dev/null; then
		ip netns del "$n" && echo "(removed stale netns $n from an interrupted run)"
	fi
done

tmp=$(mktemp -d "/tmp/$prefix.XXXXXX")
node="$prefix-$$"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	set +e
	[[ -e /run/netns/$node ]] && ip netns del "$node"
	rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$node"
mkdir "$tmp/mnt"

echo "== leakguardctl scan on a node with many pod netns (default 1,000), half leaked"
rc=0
# shellcheck disable=SC2086 # SCANBENCH_ARGS is a list of flags
ip netns exec "$node" "$bin/test/scanbench" -leakguardctl "$ctl" -work-dir "$tmp/mnt" ${SCANBENCH_ARGS:-} || rc=$?
exit "$rc"
