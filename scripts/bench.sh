#!/usr/bin/env bash
# make bench: what leakguard costs a node.
#
# Runs bin/test/lgbench (test/cmd/lgbench) inside a throw-away netns and the
# private mount namespace `ip netns exec` gives it: every node and pod netns
# it creates, and the tmpfs holding the plugins' state, vanish with it. The
# machine's own interfaces are never touched. Then, if both exist, runs the
# hook benchmark: scripts/bench-hook.sh bin/leakguard-hook, and the NRI one
# (scripts/bench-nri.sh: private containerds through crictl).
#
# Extra lgbench flags can be passed in LGBENCH_ARGS (e.g. "-pods 20 -gone-pods 10"
# for a quick run; see bin/test/lgbench -h).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${LEAKGUARD_BIN_DIR:-$root/bin}
cni_bin=${LEAKGUARD_CNI_BIN:-$root/.cache/cni/bin}
prefix=lgbench

die() {
	echo "bench: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
for f in "$bin/leakguard" "$bin/test/lgbench" "$cni_bin/bridge" "$cni_bin/host-local" "$cni_bin/tuning"; do
	[[ -x $f ]] || die "missing $f (run: make bench)"
done

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
sweep_stale "$prefix"

outer="$prefix-$$"
tmp=$(mktemp -d "/tmp/$outer.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	set +e
	[[ -e /run/netns/$outer ]] && ip netns del "$outer"
	rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$outer"

rc=0
# shellcheck disable=SC2086 # LGBENCH_ARGS is a list of flags
ip netns exec "$outer" "$bin/test/lgbench" -netns "/run/netns/$outer" -work-dir "$tmp" \
	-cni-bin "$cni_bin" -leakguard "$bin/leakguard" ${LGBENCH_ARGS:-} || rc=$?

echo
scripts/bench-gc.sh "$bin/leakguard" || rc=$?
if [[ -x scripts/bench-scan.sh && -x bin/leakguardctl ]]; then
	echo
	scripts/bench-scan.sh bin/leakguardctl || rc=$?
fi

if [[ -x scripts/bench-hook.sh && -x bin/leakguard-hook ]]; then
	echo
	scripts/bench-hook.sh bin/leakguard-hook || rc=$?
fi
if [[ -x scripts/bench-nri.sh ]]; then
	echo
	scripts/bench-nri.sh || rc=$?
fi
exit "$rc"
