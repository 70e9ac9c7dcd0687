#!/bin/bash
# build-go.sh COMPONENT VERSION OUT_DIR — builds one testbed component from its Go module
# source, as served by the Go module proxy (no clone, nothing kept in the repository).
#
# Each build happens in a throw-away wrapper module that requires the component's module.
# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging (which `go install`
# refuses); the wrapper pins each of them to the matching published v0.x.y instead.
# Runs on the host with its Go; GOMODCACHE/GOCACHE come from the caller (testbed/up).
set -euo pipefail
component=$1 version=$2 out=$3
export GOTOOLCHAIN=local GOFLAGS="-mod=mod -p=${JOBS:-2} -trimpath" GOEXPERIMENT=nojsonv2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# wrapper MODULE VERSION: a main module in $work that requires MODULE@VERSION.
wrapper() {
  local module=$1 v=$2 gomod
  cd "$work"
  go mod init testbed.local/build-"$component" >/dev/null 2>&1
  go mod edit -require "$module@$v"
  gomod=$(go mod download -json "$module@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # local-path replaces (staging) -> the published module of the same release
  local staged
  staged=$(awk '$2 == "=>" && $3 ~ /^\.\// {print $1}' "$gomod")
  local minor=${v#v1.} m
  for m in $staged; do
    go mod edit -replace "$m=$m@v0.$minor"
  done
}

ldflags_k8s() {
  local v=$1 minor ld="-s -w" p
  minor=${v#v1.}
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

t0=$(date +%s)
case $component in
  kubernetes)
    wrapper k8s.io/kubernetes "$version"
    CGO_ENABLED=0 go build -ldflags "$(ldflags_k8s "$version")" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
    ;;
  containerd)
    wrapper github.com/containerd/containerd/v2 "$version"
    p=github.com/containerd/containerd/v2
    CGO_ENABLED=0 go build -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X $p/version.Version=$version -X $p/version.Revision=module-proxy" -o "$out/" \
      $p/cmd/containerd $p/cmd/containerd-shim-runc-v2 $p/cmd/ctr
    ;;
  cri-o)
    # cgo: libseccomp (seccomp tag) and sqlite (image cache); openpgp instead of gpgme.
    wrapper github.com/cri-o/cri-o "$version"
    CGO_ENABLED=1 go build \
      -tags "containers_image_ostree_stub containers_image_openpgp seccomp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper" \
      -ldflags "-s -w" -o "$out/" github.com/cri-o/cri-o/cmd/crio
    src=$(go list -m -f '{{.Dir}}' github.com/cri-o/cri-o)
    cp -r "$src/pinns" "$work/pinns"
    chmod -R u+w "$work/pinns"
    make -s -C "$work/pinns" >/dev/null
    install -m 755 "$work/bin/pinns" "$out/pinns"
    ;;
  cri-tools)
    wrapper sigs.k8s.io/cri-tools "$version"
    CGO_ENABLED=0 go build -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$version" -o "$out/" \
      sigs.k8s.io/cri-tools/cmd/crictl
    ;;
  checkpointctl)
    wrapper github.com/checkpoint-restore/checkpointctl "$version"
    CGO_ENABLED=0 go build -ldflags "-s -w -X main.version=${version#v}" -o "$out/checkpointctl" \
      github.com/checkpoint-restore/checkpointctl
    ;;
  helm)
    wrapper helm.sh/helm/v4 "$version"
    CGO_ENABLED=0 go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
      -o "$out/" helm.sh/helm/v4/cmd/helm
    ;;
  *)
    echo "unknown component $component" >&2
    exit 2
    ;;
esac
for b in "$out"/*; do
  echo "built $component $version: $(basename "$b") ($(stat -c %s "$b") bytes) in $(($(date +%s) - t0))s"
done
