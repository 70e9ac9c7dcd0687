# shellcheck shell=bash
# testbed/up: the host packages the testbed needs. Sourced by `up`; defines only
# functions.

ensure_host_packages() {
  # gcc, make, libseccomp-dev: CRI-O (cgo) and pinns. buildah: the product's images (and
  # bench/ measures our packaging against it); skopeo: pushes the base images (and bench).
  local want=(debootstrap:debootstrap ip:iproute2 skopeo:skopeo buildah:buildah docker-registry:docker-registry
    openssl:openssl curl:curl nsenter:util-linux unshare:util-linux setsid:util-linux
    findmnt:mount python3:python3 flock:util-linux gcc:gcc make:make)
  local missing=() pair
  for pair in "${want[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
  # Debian's golang-go is too old for these modules: the machine's own Go (1.26) builds them.
  command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: the testbed builds Kubernetes and the runtimes with it"
  [ ${#missing[@]} = 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing host packages: ${missing[*]}"
  # Keep a freshly installed docker-registry service from starting on :5000: we run our own.
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy
    chmod 755 $policy
    created=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Check-Valid-Until=false update &&
      DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}"
  } >"$CACHE/logs/host-apt.log" 2>&1 || rc=$?
  [ -n "$created" ] && rm -f $policy
  [ $rc = 0 ] || { tail -20 "$CACHE/logs/host-apt.log" >&2; die "apt-get install failed (log: $CACHE/logs/host-apt.log)"; }
  # on a systemd host the package's own service would come back at boot on *:5000
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
  return 0
}
