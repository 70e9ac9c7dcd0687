# shellcheck shell=bash
# testbed/up: what `up` tells of a testbed: whether it is healthy (an idempotent `up`
# then only mends it), the env file for tools and tests, the status it prints. Sourced by `up`;
# defines only functions.

healthy() {
  [ -f "$STATE/up.done" ] || return 1
  local p n
  for p in etcd kube-apiserver registry; do
    pidfile_alive "$STATE/pids/$p.pid" || { log "unhealthy: $p is not running"; return 1; }
  done
  apiserver_ready || { log "unhealthy: apiserver not ready"; return 1; }
  for n in $(node_list); do
    pidfile_alive "$(node_dir "$n")/pid" || { log "unhealthy: node $n is not running"; return 1; }
  done
}

write_env() {
  cat >"$STATE/env" <<EOF
KUBECONFIG=$STATE/kubeconfig
TESTBED_STATE=$STATE
TESTBED_CACHE=$CACHE
TESTBED_NODES="$(node_list)"
TESTBED_RUNTIME=$(runtime)
TESTBED_REGISTRY=$REGISTRY
TESTBED_APISERVER=$APISERVER
TESTBED_BIN_DIR=$BIN_DIR
TESTBED_KUBECTL=$K8S_BIN/kubectl
TESTBED_CA=$PKI/ca.crt
TESTBED_BUSYBOX_IMAGE=docker.io/library/busybox:latest
TESTBED_BUSYBOX_DIGEST=$(cat "$STATE/busybox.digest")
EOF
}

print_status() {
  local n a p
  echo "testbed up: $(runtime) nodes (state $STATE, cache $CACHE)"
  echo "  apiserver  $APISERVER   kubeconfig $STATE/kubeconfig   env $STATE/env"
  echo "  registry   $REGISTRY"
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler registry registry-tls; do
    if pidfile_alive "$STATE/pids/$p.pid"; then
      printf '  %-24s pid %-8s rss %s MiB\n' "$p" "$(cat "$STATE/pids/$p.pid")" \
        "$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$(cat "$STATE/pids/$p.pid")/status")"
    else
      printf '  %-24s not running\n' "$p"
    fi
  done
  for n in $(node_list); do
    printf '  %-6s ip %-11s init pid %-8s' "$n" "$(cat "$(node_dir "$n")/ip")" "$(node_init_pid "$n")"
    for a in $(agents "$n"); do
      if pidfile_alive "$(node_dir "$n")/$a.pid"; then printf ' %s=%s' "$a" "$(cat "$(node_dir "$n")/$a.pid")"; else printf ' %s=-' "$a"; fi
    done
    echo
  done
}
