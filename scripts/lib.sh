# shellcheck shell=bash
# Shared helpers of the demo and benchmark scripts (sourced, not run).

# sweep_stale PREFIX: a run killed with SIGKILL cannot clean up, so remove
# the netns and temp dirs of earlier runs whose script is no longer alive.
# Runs name them PREFIX-<pid>[-...] (netns) and /tmp/PREFIX-<pid>... (dirs).
sweep_stale() {
	local prefix=$1 n pid
	for n in $(ip netns list | awk -v p="^$prefix-[0-9]+($|-)" '$1 ~ p {print $1}') /tmp/"$prefix"-[0-9]*.*; do
		[[ -e $n || -e /run/netns/$n ]] || continue
		pid=${n#*"$prefix"-}
		pid=${pid%%[!0-9]*}
		kill -0 "$pid" 2>/dev/null && continue
		if [[ $n == /tmp/* ]]; then
			rm -rf "$n"
		else
			ip netns del "$n"
		fi
		echo "(removed $n, left by an interrupted run)"
	done
}
