#!/usr/bin/env bash
# Builds the container runtimes the runtime tests (test/runtime, test/cri)
# drive, from the Go module proxy at pinned versions, into DIR (default
# .cache/runtime), one directory per tool and version:
#   containerd-<v>/  containerd, containerd-shim-runc-v2, ctr
#   crictl-<v>/      crictl
#   cri-dockerd-<v>/ cri-dockerd
# Idempotent: a directory whose stamp matches is not rebuilt. Prints one
# "name=path" line per binary on stdout (test/runtime reads them); build
# output goes to stderr.
set -euo pipefail

dir=${1:-.cache/runtime}
containerd=${CONTAINERD_VERSION:-v2.4.2}
crictl=${CRICTL_VERSION:-v1.37.0}
cridockerd=${CRI_DOCKERD_VERSION:-v0.3.17}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# Built as releases are: static, stripped.
export CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags='-s -w'

# fresh DEST WANT: true when DEST's stamp says WANT.
fresh() {
	[[ -f $1/.stamp && $(cat "$1/.stamp") == "$2" ]]
}

build_containerd() {
	local dest=$dir/containerd-$containerd want="containerd $containerd static"
	fresh "$dest" "$want" && return 0
	echo "building containerd $containerd into $dest" >&2
	rm -rf "$dest"
	mkdir -p "$dest"
	GOBIN=$dest go install -trimpath -ldflags="$ldflags" \
		"github.com/containerd/containerd/v2/cmd/containerd@$containerd" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd" \
		"github.com/containerd/containerd/v2/cmd/ctr@$containerd" >&2
	echo "$want" >"$dest/.stamp"
}

build_crictl() {
	local dest=$dir/crictl-$crictl want="crictl $crictl static"
	fresh "$dest" "$want" && return 0
	echo "building crictl $crictl into $dest" >&2
	rm -rf "$dest"
	mkdir -p "$dest"
	GOBIN=$dest go install -trimpath -ldflags="$ldflags" "sigs.k8s.io/cri-tools/cmd/crictl@$crictl" >&2
	echo "$want" >"$dest/.stamp"
}

# cri-dockerd's `go install @version` fails on its module's deprecation
# notice, and its vendor/ dir is incomplete for a module-mode build: take the
# module source, drop vendor/, build with -mod=mod.
build_cri_dockerd() {
	local dest=$dir/cri-dockerd-$cridockerd want="cri-dockerd $cridockerd static"
	fresh "$dest" "$want" && return 0
	echo "building cri-dockerd $cridockerd into $dest" >&2
	local mod src
	mod=$(go mod download -json "github.com/Mirantis/cri-dockerd@$cridockerd" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [[ -z $mod || ! -d $mod ]]; then
		echo "go mod download of cri-dockerd $cridockerd gave no source dir" >&2
		return 1
	fi
	src=$(mktemp -d "${TMPDIR:-/tmp}/cri-dockerd-src.XXXXXX")
	# shellcheck disable=SC2064 # expand now: src is local
	trap "rm -rf '$src'" RETURN
	cp -r "$mod/." "$src/"
	chmod -R u+w "$src"
	rm -rf "$src/vendor"
	rm -rf "$dest"
	mkdir -p "$dest"
	(cd "$src" && go build -trimpath -ldflags="$ldflags" -o "$dest/cri-dockerd" .) >&2
	echo "$want" >"$dest/.stamp"
}

# In parallel: module downloads of one overlap compiling of another (cold,
# on 2 cores, about 11 CPU minutes in all). A failed build fails the script.
build_containerd &
containerd_job=$!
build_crictl &
crictl_job=$!
build_cri_dockerd &
cridockerd_job=$!
wait "$containerd_job"
wait "$crictl_job"
wait "$cridockerd_job"

cat <<OUT
containerd=$dir/containerd-$containerd/containerd
containerd-shim-runc-v2=$dir/containerd-$containerd/containerd-shim-runc-v2
ctr=$dir/containerd-$containerd/ctr
crictl=$dir/crictl-$crictl/crictl
cri-dockerd=$dir/cri-dockerd-$cridockerd/cri-dockerd
OUT
