#!/usr/bin/env bash
# Wall time of leakguard-hook per container, as a runtime pays it (fork+exec
# from a parent, state JSON on stdin), next to exec'ing a trivial binary.
#   scripts/bench-hook.sh [path-to-leakguard-hook]     (BENCH_N runs per case, default 200)
# Cases: the unprivileged fast path (skip), and a privileged container whose
# rootfs has three gssproxy config files with kernel_nfsd on (each run edits
# all three; the files are restored between runs, outside the timing).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
hook="${1:-$repo/bin/leakguard-hook}"
n="${BENCH_N:-200}"
target_ms=5

work="$(mktemp -d /tmp/leakguard-bench-hook.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$hook" ]]; then
	[[ $# -eq 0 ]] || { echo "bench-hook: $hook is not an executable" >&2; exit 1; }
	echo "bench-hook: $hook not built; building it" >&2
	(cd "$repo" && go build -trimpath -o "$work/leakguard-hook" ./plugins/leakguard-hook)
	hook="$work/leakguard-hook"
fi

# bundle <dir> <privileged:true|false>: a config.json as runc/podman write it.
bundle() {
	local dir="$1" caps masked
	mkdir -p "$dir/rootfs/etc/gssproxy"
	if [[ "$2" == true ]]; then
		caps='"CAP_CHOWN","CAP_NET_ADMIN","CAP_SYS_ADMIN"' masked='[]'
	else
		caps='"CAP_CHOWN","CAP_NET_BIND_SERVICE"' masked='["/proc/kcore","/proc/keys"]'
	fi
	cat >"$dir/config.json" <<-JSON
	{"ociVersion":"1.0.2","root":{"path":"rootfs"},
	 "process":{"args":["/bin/sh"],"cwd":"/","capabilities":{"bounding":[$caps],"effective":[$caps],"permitted":[$caps]}},
	 "linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"mount"}],"maskedPaths":$masked,"readonlyPaths":[]}}
	JSON
	printf '{"ociVersion":"1.0.2","id":"bench","status":"creating","pid":1,"bundle":"%s"}' "$dir" >"$dir/state.json"
}

conf='[service/nfs-server]
  mechs = krb5
  socket = /run/gssproxy.sock
  cred_store = keytab:/etc/krb5.keytab
  trusted = yes
  kernel_nfsd = yes
  euid = 0
'
bundle "$work/unpriv" false
bundle "$work/priv" true
mkdir -p "$work/orig"
for f in gssproxy.conf 24-nfs-server.conf 99-local.conf; do
	printf '%s' "$conf" >"$work/orig/$f"
	cp "$work/orig/$f" "$work/unpriv/rootfs/etc/gssproxy/$f"
done
restore() { cp "$work"/orig/* "$work/priv/rootfs/etc/gssproxy/"; }
echo '{}' >"$work/policy.json" # defaults; never the node's /etc/leakguard/hook.json

# Check each case does what it claims before timing it.
restore
"$hook" --config "$work/policy.json" <"$work/priv/state.json" 2>"$work/priv.log"
grep -q '"decision":"edited".*"settings_changed":3' "$work/priv.log" ||
	{ echo "bench-hook: privileged case did not edit 3 settings: $(cat "$work/priv.log")" >&2; exit 1; }
"$hook" --config "$work/policy.json" <"$work/unpriv/state.json" 2>"$work/unpriv.log"
grep -q '"reason":"not privileged"' "$work/unpriv.log" ||
	{ echo "bench-hook: unprivileged case was not skipped: $(cat "$work/unpriv.log")" >&2; exit 1; }

# measure <setup> <stdin-file> <cmd...>: prints "median p95" in ms. Only the
# command is timed; $EPOCHREALTIME costs no fork.
measure() {
	local setup="$1" in="$2" t0 t1 i
	shift 2
	: >"$work/samples"
	for ((i = 0; i < n; i++)); do
		$setup
		t0=$EPOCHREALTIME
		"$@" <"$in" >/dev/null 2>&1
		t1=$EPOCHREALTIME
		echo "$t0 $t1" >>"$work/samples"
	done
	awk '{ printf "%.6f\n", ($2 - $1) * 1000 }' "$work/samples" | sort -n |
		awk '{ v[NR] = $1 } END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			p = int(NR * 0.95 + 0.999999); if (p > NR) p = NR
			printf "%.2f %.2f\n", m, v[p] }'
}

true_bin=/bin/true
read -r true_med true_p95 < <(measure : /dev/null "$true_bin")
read -r un_med un_p95 < <(measure : "$work/unpriv/state.json" "$hook" --config "$work/policy.json")
read -r pr_med pr_p95 < <(measure restore "$work/priv/state.json" "$hook" --config "$work/policy.json")

verdict() { awk -v m="$1" -v t="$target_ms" 'BEGIN { print (m <= t) ? "ok" : "OVER TARGET" }'; }
echo "leakguard-hook wall time, $n runs per case (fork+exec from bash, $(nproc) CPUs, $(uname -r))"
printf '%-40s %10s %10s\n' case median p95
printf '%-40s %8s ms %7s ms\n' "exec $true_bin (baseline)" "$true_med" "$true_p95"
printf '%-40s %8s ms %7s ms  %s\n' "hook, unprivileged (fast path, skip)" "$un_med" "$un_p95" "$(verdict "$un_med")"
printf '%-40s %8s ms %7s ms  %s\n' "hook, privileged, 3 config files edited" "$pr_med" "$pr_p95" "$(verdict "$pr_med")"
echo "target: median <= ${target_ms} ms for both hook cases"
