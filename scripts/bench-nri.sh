#!/usr/bin/env bash
# What leakguard-nri and leakguard-hook cost a container start through CRI:
# crictl create + start of privileged containers on a private containerd 2.4
# (test/runtime), with the external plugin connected against without it, and
# the time the plugin spends inside CreateContainer (its own timing).
#   scripts/bench-nri.sh            (BENCH_N containers per case, default 40)
# Runs test/cri's BenchmarkNRICreateStart once; needs root and what
# `make test` needs (containerd is built once into .cache/runtime).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ $(id -u) -eq 0 ]] || { echo "bench-nri: must run as root (it starts containerd)" >&2; exit 1; }

LEAKGUARD_BENCH_N=${BENCH_N:-40} CGO_ENABLED=0 \
	go test -run '^$' -bench '^BenchmarkNRICreateStart$' -benchtime 1x -count 1 -timeout 20m ./test/cri/
