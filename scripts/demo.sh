#!/usr/bin/env bash
# make demo: the auth_rpcgss netns leak on a CNI node, without and with leakguard.
#
# Two throw-away "nodes" (network namespaces standing in for a Kubernetes node;
# the machine's own interfaces are never touched) each run the same bridge +
# host-local network through cnitool, the reference CNI client. On the second
# node the chain ends with leakguard. On each node the script adds a pod, leaks
# the pod's netns the way the kernel bug does (the netns stays alive, held by a
# socket, but its path is gone), deletes the pod, and then shows what the node
# is left with.
#
# Needs root, bin/leakguard, bin/test/leaksim and the reference plugins in
# .cache/cni/bin (make demo builds them all). Safe to re-run; cleans up after
# itself.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LEAKGUARD_BIN_DIR:-$root/bin}
cni_bin=${LEAKGUARD_CNI_BIN:-$root/.cache/cni/bin}
prefix=lgdemo
run_id="$prefix-$$"
cni_cache=/var/lib/cni/results # where cnitool (libcni) caches ADD results

die() {
	echo "demo: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
for f in "$bin/leakguard" "$bin/test/leaksim" "$cni_bin/cnitool" "$cni_bin/bridge" "$cni_bin/host-local"; do
	[[ -x $f ]] || die "missing $f (run: make demo)"
done

tmp=$(mktemp -d "/tmp/$run_id.XXXXXX")
netns_made=() # every netns this run created
pins=()       # pids of leaksim processes holding leaked pod netns
cache_files=()

cleanup() {
	set +e
	local pid n
	for pid in "${pins[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for n in "${netns_made[@]}"; do
		[[ -e /run/netns/$n ]] && ip netns del "$n"
	done
	for n in "${cache_files[@]}"; do
		rm -f "$n"
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
# A killed run also leaves cnitool's cached results, which name the run's
# netns paths, hence the run.
sweep_stale_demo() {
	local n pid
	sweep_stale "$prefix"
	for n in "$cni_cache/$prefix"-*-cnitool-*; do
		[[ -e $n ]] || continue
		pid=$(grep -o "\"netns\":\"/run/netns/$prefix-[0-9]*-" "$n" | grep -o '[0-9]*-$' || true)
		pid=${pid%-}
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$n" && echo "(removed $n, left by an interrupted run)"
		fi
	done
}

new_netns() {
	ip netns add "$1"
	netns_made+=("$1")
	ip -n "$1" link set lo up
}

# cnitool derives the container ID from the netns path; its cached result is
# named after it. Remember the file so an interrupted run removes it too.
remember_cache_file() { # net netns_path
	local h
	h=$(printf '%s' "$2" | sha512sum | cut -c1-20)
	cache_files+=("$cni_cache/$1-cnitool-$h-eth0")
}

write_conflist() { # dir net with_leakguard
	local dir=$1 net=$2 guard=$3 extra=""
	if [[ $guard == yes ]]; then
		extra=$(printf ',\n    { "type": "leakguard", "stateDir": "%s", "pinDir": "%s",\n      "logFile": "%s", "logLevel": "info" }' \
			"$dir/leakguard-state" "$dir/leakguard-pins" "$dir/leakguard.log")
	fi
	mkdir -p "$dir/net.d"
	cat >"$dir/net.d/10-$net.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$net",
  "plugins": [
    { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
      "ipam": { "type": "host-local", "subnet": "10.22.0.0/24", "dataDir": "$dir/ipam" } }$extra
  ]
}
EOF
}

cnitool_in() { # node dir cnitool-args...
	local node=$1 dir=$2
	shift 2
	ip netns exec "$node" env CNI_PATH="$cni_bin:$bin" NETCONFPATH="$dir/net.d" "$cni_bin/cnitool" "$@"
}

host_veths() { ip -n "$1" -br link show type veth | awk '{print $1, $2}'; }

# run_case NAME WITH_LEAKGUARD: the whole leak scenario on a fresh node.
run_case() {
	local name=$1 guard=$2
	local dir="$tmp/$name" node="$run_id-node-$name" pod="$run_id-pod-$name"
	local net="$prefix-$name" podpath="/run/netns/$run_id-pod-$name"
	local pin

	echo
	if [[ $guard == yes ]]; then
		echo "== Node \"$name\": bridge + host-local, then leakguard =="
	else
		echo "== Node \"$name\": bridge + host-local (no leakguard) =="
	fi
	mkdir -p "$dir"
	write_conflist "$dir" "$net" "$guard"
	new_netns "$node"
	new_netns "$pod"
	remember_cache_file "$net" "$podpath"

	cnitool_in "$node" "$dir" add "$net" "$podpath" >"$dir/add.json"
	echo "1. cnitool add: pod eth0 $(ip -n "$pod" -br -4 addr show eth0 | awk '{print $3}')," \
		"host side: $(host_veths "$node" | awk '{print $1}' | paste -sd ' ')"
	if [[ $guard == yes ]]; then
		echo "   leakguard recorded: $(find "$dir/leakguard-state" -type f -name "*.json" -printf "%P " 2>/dev/null || true)"
	fi

	"$bin/test/leaksim" -report "$dir/leaked-links" "$podpath" >"$dir/leaksim.out" 2>&1 &
	pin=$!
	pins+=("$pin")
	for _ in $(seq 50); do
		grep -q pinned "$dir/leaksim.out" && break
		kill -0 "$pin" 2>/dev/null || die "leaksim failed: $(cat "$dir/leaksim.out")"
		sleep 0.1
	done
	grep -q pinned "$dir/leaksim.out" || die "leaksim did not pin $podpath"
	ip netns del "$pod"
	echo "2. leak: pod netns pinned by a socket (leaksim pid $pin), then its path removed:" \
		"$( [[ -e $podpath ]] && echo "still there?!" || echo "$podpath is gone")"

	if cnitool_in "$node" "$dir" del "$net" "$podpath" >"$dir/del.out" 2>&1; then
		echo "3. cnitool del (netns path missing): exit 0"
	else
		echo "3. cnitool del (netns path missing): FAILED: $(cat "$dir/del.out")"
	fi
	if [[ -s $dir/leakguard.log ]]; then
		echo "   leakguard log (condensed):"
		condense_log <"$dir/leakguard.log"
	fi

	report_node "$name" "$node" "$dir" "$pin" "$guard" >"$dir/report"
}

# condense_log: one short line per leakguard log record (verb, level,
# message, link); lines in another format are shown as they are.
condense_log() {
	sed -E -e 's/^\{.*"level":"([A-Z]+)","msg":"([^"]*)".*"cmd":"([A-Z]+)"(.*"link":"([^"]*)")?.*$/     \3 \1 \2 \5/' \
		-e 's/^([^ ])/     \1/'
}

# report_node: what the node (and the leaked pod) is left with, one block.
report_node() {
	local name=$1 node=$2 dir=$3 pin=$4 guard=$5 n
	echo "host veths (ip -br link show type veth):"
	host_veths "$node" | sed 's/^/  /'
	[[ -n $(host_veths "$node") ]] || echo "  (none)"
	echo "ports of bridge cni0:"
	n=$(ip -n "$node" -br link show master cni0 | awk '{print "  " $1}')
	echo "${n:-  (none)}"
	echo "IPs still reserved (host-local):"
	n=$(find "$dir/ipam" -type f ! -name 'last_reserved_ip*' ! -name lock -printf '  %f\n' 2>/dev/null || true)
	echo "${n:-  (none)}"
	echo "leakguard state files:"
	if [[ $guard == yes ]]; then
		n=$(find "$dir/leakguard-state" -type f -printf '  %P\n' 2>/dev/null || true)
		echo "${n:-  (none)}"
	else
		echo "  (not installed)"
	fi
	echo "inside the leaked pod netns:"
	rm -f "$dir/leaked-links"
	kill -USR1 "$pin"
	for _ in $(seq 50); do
		[[ -e $dir/leaked-links ]] && break
		sleep 0.1
	done
	awk '{print "  " $1 " (" $2 ")"}' "$dir/leaked-links" 2>/dev/null || echo "  (could not inspect)"
}

side_by_side() { # left right
	awk -v w=46 'NR == FNR { l[FNR] = $0; n = FNR; next }
		{ r[FNR] = $0; if (FNR > n) n = FNR }
		END { for (i = 1; i <= n; i++) printf "  %-" w "s  %s\n", l[i], r[i] }' "$1" "$2"
}

sweep_stale_demo
echo "leakguard demo: what a leaked pod netns leaves on a node, without and with leakguard"
echo "(all namespaces below are throw-away; this machine's interfaces are not touched)"

run_case plain no
run_case guarded yes

echo
echo "== What each node is left with after the pod was deleted =="
echo
printf '  %-46s  %s\n' "WITHOUT leakguard (bridge)" "WITH leakguard (bridge -> leakguard)"
printf '  %-46s  %s\n' "--------------------------" "------------------------------------"
side_by_side "$tmp/plain/report" "$tmp/guarded/report"
echo

plain_left=$(host_veths "$run_id-node-plain" | wc -l)
guarded_left=$(host_veths "$run_id-node-guarded" | wc -l)
if ((plain_left > 0 && guarded_left == 0)); then
	echo "VERDICT: OK - without leakguard the deleted pod's host veth stays on the node" \
		"($plain_left left); with leakguard it is gone (0 left)."
else
	echo "VERDICT: UNEXPECTED - host veths left: without leakguard $plain_left, with leakguard $guarded_left" \
		"(expected >0 and 0)."
	exit 1
fi
echo "(The pod netns itself stays alive in both cases: that is the kernel bug. leakguard"
echo " removes what it holds on the host - and deleting the host veth removes its peer too.)"
