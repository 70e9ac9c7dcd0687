#!/bin/bash
# build-k8s.sh OUT_DIR VERSION — runs inside the sid build root (see `build_k8s` in up).
# Builds static kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from
# Debian bookworm's `kubernetes` source package (1.20.5+really1.20.2), unpacked at /src.
set -euo pipefail
out=$1 version=$2

# GOPATH mode with the tree's own vendor/ (vendor/k8s.io/* link to staging/). Module mode
# fails with a current Go on this go1.15 go.mod. CGO off: static binaries run on the host.
export GO111MODULE=off GOPATH=/gopath GOCACHE=/gocache CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS=-p=${JOBS:-2}
src=$(ls -d /src/kubernetes-1.20*/ | head -1)
src=${src%/}
[ -d "$src" ] || { echo "no kubernetes source under /src" >&2; exit 1; }
mkdir -p /gopath/src/k8s.io
ln -sfn "$src" /gopath/src/k8s.io/kubernetes
cd /gopath/src/k8s.io/kubernetes
go version

# The vendored reflect2 1.0.1 / json-iterator 1.1.10 crash with Go >= 1.18 when encoding maps
# (e.g. on every custom-resource create). Debian's 1.0.2 / 1.1.12 have the same API.
for d in modern-go/reflect2 json-iterator/go; do
  rm -rf "vendor/github.com/$d"
  cp -a "/usr/share/gocode/src/github.com/$d" "vendor/github.com/$d"
done

# pkg/generated/openapi is generated at build time upstream and absent from the tarball.
gen=pkg/generated/openapi/zz_generated.openapi.go
if [ ! -s "$gen" ]; then
  echo "generating $gen"
  go build -o /usr/local/bin/openapi-gen ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  dirs=$(find -H . -not \( \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune \) -type f -name '*.go' \
    | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u)
  # shellcheck disable=SC2086
  tagged=$(find $dirs -maxdepth 1 -type f -name '*.go' | xargs grep -l '^// *+k8s:' \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/')
  # shellcheck disable=SC2086
  inputs=$(grep -l '+k8s:openapi-gen=' $tagged | xargs -n1 dirname | LC_ALL=C sort -u \
    | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
  openapi-gen --logtostderr -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r /tmp/openapi-violations.report \
    2>/tmp/openapi-gen.log || { tail -20 /tmp/openapi-gen.log >&2; exit 1; }
fi

minor=${version#v1.}
minor=${minor%%.*}
ld="-s -w"
for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
mkdir -p "$out"
# apiserver and kubectl are required; the testbed runs without kcm/scheduler if they fail
# (the failure is kept next to the binaries and reported by `up`).
for cmd in kube-apiserver kubectl kube-controller-manager kube-scheduler; do
  start=$(date +%s)
  if go build -ldflags "$ld" -o "$out/$cmd" "./cmd/$cmd" 2>"/tmp/build-$cmd.log"; then
    echo "built $cmd in $(($(date +%s) - start))s ($(stat -c %s "$out/$cmd") bytes)"
  else
    cat "/tmp/build-$cmd.log" >&2
    case $cmd in
      kube-apiserver | kubectl) exit 1 ;;
      *) cp "/tmp/build-$cmd.log" "$out/$cmd.build-failed" ;;
    esac
  fi
done
