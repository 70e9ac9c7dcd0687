# shellcheck shell=bash
# testbed/up: the cached artifacts the nodes run (Go builds, the node binaries, the sid
# root), in $CACHE, which survives `down`. Sourced by `up` (JOBS and elapsed are its own).

# Artifacts cached in $CACHE, each keyed by what it is built from.
NODE_PKGS="criu runc conmon containernetworking-plugins iptables iproute2 busybox-static ca-certificates curl procps etcd-server libseccomp2 mount"
key_of() { echo "$*" | sha256sum | cut -c1-12; }
NODE_ROOT=$CACHE/sid-node-$(key_of sid "$NODE_PKGS")

in_root() { unshare -m -- "$FILES/in-root" "$@"; }

# Each is built under NAME.tmp and renamed when complete: a directory with the final name
# is always a finished build, whatever interrupted an earlier attempt.

# ensure_go COMPONENT VERSION: $CACHE/COMPONENT-VERSION/bin, built from the Go module proxy.
ensure_go() {
  local component=$1 version=$2 final tmp t
  final=$CACHE/$component-$version
  [ -d "$final" ] && return 0
  tmp=$final.tmp
  rm -rf --one-file-system "$tmp"
  t=$(date +%s)
  log "building $component $version from the Go module proxy (log: $CACHE/logs/build-$component.log)"
  GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build JOBS=$JOBS \
    "$FILES/build-go.sh" "$component" "$version" "$tmp/bin" >"$CACHE/logs/build-$component.log" 2>&1 ||
    { tail -30 "$CACHE/logs/build-$component.log" >&2; die "building $component $version failed"; }
  mv "$tmp" "$final"
  log "$component $version built in $(($(date +%s) - t))s"
}

# The nodes' /usr/local/bin: hard links to the binaries their runtimes (RUNTIMES, the words of
# $1) need (same file system).
ensure_node_bin() {
  local r dirs d final tmp
  dirs="$K8S_BIN $CACHE/cri-tools-$CRI_TOOLS_VERSION/bin $CACHE/checkpointctl-$CHECKPOINTCTL_VERSION/bin"
  for r in $1; do
    case $r in
      crio) dirs+=" $CACHE/cri-o-$CRIO_VERSION/bin" ;;
      containerd) dirs+=" $CACHE/containerd-$CONTAINERD_VERSION/bin" ;;
    esac
  done
  final=$CACHE/node-bin-$(key_of "$dirs")
  NODE_BIN_DIR=$final
  [ -d "$final" ] && return 0
  tmp=$final.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for d in $dirs; do cp -al "$d"/. "$tmp/"; done
  rm -f "$tmp"/kube-apiserver "$tmp"/kube-controller-manager "$tmp"/kube-scheduler
  mv "$tmp" "$final"
}

# apt inside a sid root: the mirror may be a snapshot whose Release files have expired.
configure_root_apt() {
  local root=$1
  shift
  printf '%s\n' "$@" >"$root/etc/apt/sources.list"
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99testbed-no-valid-until"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}

ensure_node_root() {
  [ -d "$NODE_ROOT" ] && return 0
  local tmp=$NODE_ROOT.tmp logf=$CACHE/logs/sid-node-debootstrap.log
  rm -rf --one-file-system "$tmp"
  log "debootstrap sid -> $NODE_ROOT (packages: $NODE_PKGS)"
  debootstrap --variant=minbase --include="${NODE_PKGS// /,}" sid "$tmp" "$MIRROR" >"$logf" 2>&1 ||
    { tail -20 "$logf" >&2; die "debootstrap failed (log: $logf)"; }
  configure_root_apt "$tmp" "deb $MIRROR sid main"
  in_root "$tmp" /bin/sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/*
    dpkg-query -W criu runc conmon containernetworking-plugins etcd-server busybox-static > /etc/testbed-node-versions' \
    >>"$logf" 2>&1 || die "node root setup failed (log: $logf)"
  # mount points used by every node (see prepare_node_root)
  mkdir -p "$tmp"/{var/lib/containerd,var/lib/containers,var/lib/kubelet,etc/testbed,etc/kubernetes,etc/containerd/certs.d,etc/cni/net.d,etc/crio/crio.conf.d,etc/containers/registries.conf.d,sys/kernel/mm/hugepages}
  mv "$tmp" "$NODE_ROOT"
  log "node root ready ($(elapsed)): $(tr '\t\n' '= ' <"$NODE_ROOT/etc/testbed-node-versions")"
}
