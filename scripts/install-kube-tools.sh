#!/usr/bin/env bash
# Builds the Kubernetes node the cluster tests (test/kube, test/k8s) run,
# from the Go module proxy at pinned versions, into DIR/<kube version>/bin
# (default DIR .cache/kube): kubelet, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl and etcd.
#
# k8s.io/kubernetes is not meant to be built as a module: its zip has no
# staging/ (the k8s.io/* modules its go.mod replaces with ./staging/...) and
# a vendor/ holding only OWNERS files that would switch on vendor mode. So the
# module source is copied out, go.work* and vendor/ deleted, the replace block
# dropped and every staging module required at the matching v0.x.y release.
# etcd's server module is built the same way, its ../ replaces dropped.
#
# Idempotent: a group (kubernetes, etcd) whose stamp matches is not rebuilt.
# Prints one line per tool built, nothing else on success; the build's own
# output goes to a log printed on failure.
set -euo pipefail

dir=${1:-.cache/kube}
kube=${KUBE_VERSION:-v1.37.2}
etcd=${ETCD_VERSION:-v3.7.3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin=$dir/$kube/bin
mkdir -p "$bin"

# Built as releases are: static, stripped, no VCS stamping of a source copy.
export CGO_ENABLED=0 GOFLAGS=-mod=mod
goversion=$(go env GOVERSION)
kube_tools=(kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl)

# fresh GROUP WANT: true when GROUP's stamp says WANT and its binaries exist.
fresh() {
	local stamp=$bin/.$1.stamp tool
	[[ -f $stamp && $(cat "$stamp") == "$2" ]] || return 1
	shift 2
	for tool in "$@"; do
		[[ -x $bin/$tool ]] || return 1
	done
}

# moddir MODULE@VERSION: the module's source dir in the module cache.
moddir() {
	local d
	d=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [[ -z $d || ! -d $d ]]; then
		echo "go mod download $1 gave no source dir" >&2
		return 1
	fi
	printf '%s\n' "$d"
}

# modtime MODULE@VERSION: the release time the proxy records (a
# reproducible buildDate).
modtime() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"Time": "\(.*\)",$/\1/p' | head -n1
}

# run LOG CMD...: CMD's output goes to LOG, shown only if it fails.
run() {
	local log=$1
	shift
	if ! "$@" >>"$log" 2>&1; then
		echo "failed: $*" >&2
		tail -n 60 "$log" >&2
		return 1
	fi
}

build_kubernetes() {
	local want="kubernetes $kube $goversion static"
	fresh kubernetes "$want" "${kube_tools[@]}" && return 0
	local work log mod staging minor when
	work=$(mktemp -d "${TMPDIR:-/tmp}/kube-src.XXXXXX")
	# shellcheck disable=SC2064 # expand now: work is local
	trap "chmod -R u+w '$work' 2>/dev/null; rm -rf '$work'" RETURN
	log=$work/build.log
	mod=$(moddir "k8s.io/kubernetes@$kube")
	when=$(modtime "k8s.io/kubernetes@$kube")
	cp -r "$mod" "$work/src"
	chmod -R u+w "$work/src"
	rm -rf "$work/src/go.work" "$work/src/go.work.sum" "$work/src/vendor"
	# v1.37.2's staging modules are released as v0.37.2.
	staging=v0.${kube#v1.}
	# Drop the replace block; every "k8s.io/x v0.0.0" requirement (only the
	# staging modules are required at v0.0.0) becomes the release.
	sed -i -e '/^replace (/,/^)/d' \
		-e "s#^\(\s*k8s\.io/[a-z0-9-]*\) v0\.0\.0\$#\1 $staging#" "$work/src/go.mod"
	if grep -q -e '=> ./staging' -e ' v0\.0\.0$' "$work/src/go.mod"; then
		echo "k8s.io/kubernetes@$kube: go.mod still points at staging after the edit" >&2
		return 1
	fi
	minor=${kube#v1.}
	minor=${minor%%.*}
	local pkg ldflags=-s\ -w
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$kube -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$when"
	done
	local targets=() tool
	for tool in "${kube_tools[@]}"; do
		targets+=("./cmd/$tool")
	done
	(cd "$work/src" && run "$log" go build -trimpath -ldflags="$ldflags" -o "$work/out/" "${targets[@]}") || return 1
	for tool in "${kube_tools[@]}"; do
		mv -f "$work/out/$tool" "$bin/$tool"
		echo "built $tool $kube"
	done
	echo "$want" >"$bin/.kubernetes.stamp"
}

build_etcd() {
	local want="etcd $etcd $goversion static"
	fresh etcd "$want" etcd && return 0
	local work log mod
	work=$(mktemp -d "${TMPDIR:-/tmp}/etcd-src.XXXXXX")
	# shellcheck disable=SC2064 # expand now: work is local
	trap "chmod -R u+w '$work' 2>/dev/null; rm -rf '$work'" RETURN
	log=$work/build.log
	mod=$(moddir "go.etcd.io/etcd/server/v3@$etcd")
	cp -r "$mod" "$work/src"
	chmod -R u+w "$work/src"
	# The ../api, ../pkg, ... replaces point into etcd's repository; the
	# module requires those modules at the same release already.
	sed -i -e '/^replace (/,/^)/d' -e '/^replace .* => \.\./d' "$work/src/go.mod"
	(cd "$work/src" && run "$log" go build -trimpath -ldflags="-s -w" -o "$work/etcd" .) || return 1
	mv -f "$work/etcd" "$bin/etcd"
	echo "built etcd $etcd"
	echo "$want" >"$bin/.etcd.stamp"
}

# In parallel: etcd (small) compiles while Kubernetes downloads.
build_kubernetes &
kube_job=$!
build_etcd &
etcd_job=$!
status=0
wait "$kube_job" || status=1
wait "$etcd_job" || status=1
exit "$status"
