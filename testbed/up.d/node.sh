# shellcheck shell=bash
# testbed/up: one node (its root, cgroups, namespaces, veth and agents) and the wait
# for all of them to be Ready. Sourced by `up`; defines only functions.

# prepare_node_root NODE: the node's / in the HOST mount namespace, so the host sees the
# node's files at nodes/NODE/root. Separate per node: overlayfs over the cached sid root with
# a per-node upper dir; the runtimes' and the kubelet's dirs are plain per-node dirs (overlay
# storage cannot live on overlayfs).
prepare_node_root() {
  local node=$1 d r ip
  d=$(node_dir "$node")
  r=$d/root
  ip=$(node_ip "$node")
  mkdir -p "$d"/{upper,work,root,containerd,containers,kubelet/checkpoints,run}
  echo "$ip" >"$d/ip"
  mount -t overlay overlay -o "lowerdir=$NODE_ROOT,upperdir=$d/upper,workdir=$d/work" "$r"
  mount --bind "$d/containerd" "$r/var/lib/containerd"
  mount --bind "$d/containers" "$r/var/lib/containers"
  mount --bind "$d/kubelet" "$r/var/lib/kubelet"
  mount --bind "$d/run" "$r/run"          # on disk, seen by the host: the CRI socket lives here
  mount --bind "$NODE_BIN_DIR" "$r$NODE_BIN"
  mount -o remount,bind,ro "$r$NODE_BIN"
  mount --bind "$STATE/node-etc" "$r/etc/testbed"
  mount -o remount,bind,ro "$r/etc/testbed"
  # the kubelet's and kube-proxy's identities and configuration
  local k=$r/etc/kubernetes
  install -m 0644 "$PKI/ca.crt" "$k/ca.crt"
  install -m 0600 "$PKI/kubelet-serving.crt" "$k/kubelet-serving.crt"
  install -m 0600 "$PKI/kubelet-serving.key" "$k/kubelet-serving.key"
  install -m 0600 "$PKI/kubelet-$node.kubeconfig" "$k/kubelet.kubeconfig"
  install -m 0600 "$PKI/kube-proxy.kubeconfig" "$k/kube-proxy.kubeconfig"
  sed -e "s|@NODE@|$node|g" -e "s|@IP@|$ip|g" -e "s|@SOCK@|$(node_cri_sock "$node")|g" \
    "$FILES/kubernetes/kubelet.yaml" >"$k/kubelet.yaml"
  sed -e "s|@NODE@|$node|g" -e "s|@CLUSTER_CIDR@|$CLUSTER_CIDR|g" "$FILES/kubernetes/kube-proxy.yaml" >"$k/kube-proxy.yaml"
  # our image credential provider, as deploy/kubelet/ tells users to install it
  install -m 0644 "$REPO_DIR/deploy/kubelet/credential-provider.yaml" "$k/credential-provider.yaml"
  mkdir -p "$r$CREDENTIAL_PROVIDER_DIR"
  install -m 0755 "$BIN_DIR/checkpointing-credential-provider" "$r$CREDENTIAL_PROVIDER_DIR/" ||
    die "$BIN_DIR/checkpointing-credential-provider is missing: cargo build -p noded"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$(node_cri_sock "$node")" "$(node_cri_sock "$node")" >"$r/etc/crictl.yaml"
  # CRIU's settings for runc under either runtime (tcp-close), as deploy/node/ ships them
  mkdir -p "$r/etc/criu"
  install -m 644 "$REPO_DIR/deploy/node/criu-runc.conf" "$r/etc/criu/runc.conf"
  # the runtime's configuration: the testbed's own, and deploy/'s files as users install them
  case $(node_runtime "$node") in
    crio)
      install -m 644 "$FILES/crio/crio.conf" "$r/etc/crio/crio.conf.d/00-testbed.conf"
      install -m 644 "$REPO_DIR/deploy/crio/10-checkpoint-restore.conf" "$r/etc/crio/crio.conf.d/"
      sed "s|@REGISTRY@|$REGISTRY|g" "$FILES/crio/registries.conf" >"$r/etc/containers/registries.conf"
      install -m 644 "$REPO_DIR/deploy/crio/registries.conf" "$r/etc/containers/registries.conf.d/50-checkpoint-local.conf"
      install -m 644 "$FILES/policy.json" "$r/etc/containers/policy.json"
      mkdir -p "$r/usr/local/sbin"
      install -m 755 "$FILES/crio/runc" "$r/usr/local/sbin/runc"
      ;;
    containerd)
      install -m 644 "$FILES/containerd.toml" "$r/etc/containerd/config.toml"
      mkdir -p "$r/etc/containerd/certs.d/docker.io" "$r/etc/containerd/certs.d/$REGISTRY"
      sed "s|@REGISTRY@|$REGISTRY|g" "$FILES/hosts-docker.io.toml" >"$r/etc/containerd/certs.d/docker.io/hosts.toml"
      sed "s|@REGISTRY@|$REGISTRY|g" "$FILES/hosts-registry.toml" >"$r/etc/containerd/certs.d/$REGISTRY/hosts.toml"
      ;;
  esac
  sed "s|@SUBNET@|$(node_pod_subnet "$node")|" "$FILES/cni.conflist" >"$r/etc/cni/net.d/10-testbed.conflist"
  printf '127.0.0.1 localhost\n%s %s\n%s testbed-host %s\n' "$ip" "$node" "$HOST_IP" "$DOCKER_HUB_HOST" >"$r/etc/hosts"
  echo "nameserver $HOST_IP" >"$r/etc/resolv.conf"   # nothing answers: names fail fast, as in an offline cluster
  cat "$PKI/ca.crt" >>"$r/etc/ssl/certs/ca-certificates.crt"
  local sock
  sock=$(node_cri_sock "$node")
  ln -sfn "run/${sock#/run/}" "$d/cri.sock"
}

# The kubelet's cgroupRoot /ckpt-testbed/NODE, in every hierarchy (cpuset needs its cpus and
# mems set before anything can join it).
make_node_cgroups() {
  local node=$1 h p
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -d "$h" ] || continue
    for p in "$CGROUP_NAME" "$CGROUP_NAME/$node"; do
      mkdir -p "$h/$p"
      if [ -f "$h/$p/cpuset.cpus" ]; then
        [ -n "$(cat "$h/$p/cpuset.cpus")" ] || cat "$(dirname "$h/$p")/cpuset.cpus" >"$h/$p/cpuset.cpus"
        [ -n "$(cat "$h/$p/cpuset.mems")" ] || cat "$(dirname "$h/$p")/cpuset.mems" >"$h/$p/cpuset.mems"
      fi
    done
  done
}

node_ready() { [ "$(kubectl_ get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }

start_node() {
  local node=$1 d init ip i a
  d=$(node_dir "$node")
  ip=$(node_ip "$node")
  prepare_node_root "$node"
  make_node_cgroups "$node"
  # --kill-child: if unshare dies, so does the node's init (and with it the whole node).
  start_daemon "$d/unshare.pid" "$d/init.log" \
    unshare -m -u -i -n -p -f --kill-child -- /bin/sh "$FILES/node-init.sh" "$d/root" "$node"
  init=""
  for ((i = 0; i < 50; i++)); do
    init=$(children "$(cat "$d/unshare.pid")" | head -1)
    [ -n "$init" ] && break
    sleep 0.1
  done
  [ -n "$init" ] || { cat "$d/init.log" >&2; die "$node: namespace init did not start"; }
  echo "$init" >"$d/pid"
  wait_for 10 "$node init" test -e "$d/run/testbed-node.ready" || { cat "$d/init.log" >&2; die "$node: init failed"; }
  # network: veth from the bridge into the node; no NAT, the host does not forward
  ip link add "ckpt-$node" type veth peer name eth0 netns "$init"
  ip link set "ckpt-$node" master "$BRIDGE" up
  nsenter -t "$init" -n ip addr add "$ip/24" dev eth0
  nsenter -t "$init" -n ip link set eth0 up
  nsenter -t "$init" -n ip route add default via "$HOST_IP"
  # the node forwards for its pods and for Service traffic it DNATs (kube-proxy)
  nsenter -t "$init" -n sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
  # host -> pods on this node (apiserver -> webhook pods, tests -> pod IPs)
  ip route add "$(node_pod_subnet "$node")" via "$ip" dev "$BRIDGE"
  node_runtime "$node" >"$d/runtime"
  for a in $(agents "$node"); do
    agent_start "$a" "$node"
    if [ "$a" = "$(node_runtime "$node")" ]; then
      wait_for 60 "$node $a" runtime_ready "$node" || { tail -20 "$d/$a.log" >&2; die "$node: $a not ready"; }
    fi
  done
  log "$node: $(node_runtime "$node") $(node_enter "$node" crictl version 2>/dev/null | awk '/RuntimeVersion/ {print $2}'), ip $ip, init pid $init, pods $(node_pod_subnet "$node")"
}

wait_nodes_ready() {
  local n
  for n in $(node_list); do
    wait_for 120 "node $n Ready" node_ready "$n" ||
      { tail -20 "$(node_dir "$n")/kubelet.log" >&2; die "$n did not become Ready"; }
  done
  log "nodes Ready: $(kubectl_ get nodes -o wide --no-headers | awk '{print $1" "$5" "$NF}' | paste -sd ';')"
}
