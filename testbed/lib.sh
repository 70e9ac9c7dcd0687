# shellcheck shell=bash
# Shared settings and helpers for testbed/up, down, agents, node-exec, kubectl, mkkubeconfig.
# Sourced, never run. Everything here is about *where* things are and *how* to start/stop
# processes safely; the sequencing lives in `up` (its parts in up.d/) and `down`.

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$TESTBED_DIR")
FILES=$TESTBED_DIR/files

CACHE=${TESTBED_CACHE:-/var/cache/ckpt-testbed}   # survives `down`, keyed by version
STATE=${TESTBED_STATE:-/var/lib/ckpt-testbed}     # wiped by `down`
BIN_DIR=${TESTBED_BIN_DIR:-$REPO_DIR/target/debug}

# Versions built from the Go module proxy (testbed/files/build-go.sh), each cached in
# $CACHE/COMPONENT-VERSION/bin.
K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.3.7
CRIO_VERSION=v1.36.3
CRI_TOOLS_VERSION=v1.37.0
# v1.7.0 needs go-criu v8.5.0, whose source the module proxy does not serve (403)
CHECKPOINTCTL_VERSION=v1.6.0
# the chart's tests (testbed/e2e/tests/chart.rs) and its install run this helm
HELM_VERSION=v4.3.2
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION/bin

# The nodes' container runtime: crio (default) or containerd, on every node, so the same tests
# (and samples/, which name node1 and node2) run on each; or mixed: the last node containerd,
# the others CRI-O, one install of the product for both (the seed's node1 -> node2 migration
# stays on CRI-O). Once up, the state dir is the truth.
runtime() {
  if [ -f "$STATE/runtime" ]; then cat "$STATE/runtime"; return; fi
  case ${TESTBED_RUNTIME:-crio} in
    crio | containerd | mixed) echo "${TESTBED_RUNTIME:-crio}" ;;
    *) die "TESTBED_RUNTIME=${TESTBED_RUNTIME} must be crio, containerd or mixed" ;;
  esac
}

# node_runtime NODE: the runtime NODE runs (crio or containerd).
node_runtime() {
  local r
  r=$(runtime)
  if [ "$r" != mixed ]; then echo "$r"; return; fi
  if [ "$1" = "$(node_list | awk '{print $NF}')" ]; then echo containerd; else echo crio; fi
}

# The runtimes some node runs.
runtimes() {
  case $(runtime) in
    mixed) echo crio containerd ;;
    *) runtime ;;
  esac
}

# Network contract (other code depends on these numbers).
BRIDGE=ckpt0
NET=10.77.0
HOST_IP=$NET.1
API_PORT=6443
REGISTRY=$HOST_IP:5000
APISERVER=https://$HOST_IP:$API_PORT
ETCD_PORT=23790          # unusual ports: never collide with a real etcd on this machine
ETCD_PEER_PORT=23800
KCM_PORT=10257
SCHED_PORT=10259
# Host name containerd's default resolver uses for docker.io images; nodes map it to HOST_IP.
DOCKER_HUB_HOST=registry-1.docker.io
SERVICE_CIDR=10.0.0.0/24
CLUSTER_CIDR=10.88.0.0/16
CONTROLLER_NAMESPACE=external-checkpointer-system  # deploy/'s namespace for the controller
CREDENTIAL_PROVIDER_DIR=/usr/local/libexec/kubernetes/credential-providers # in every node
CGROUP_NAME=ckpt-testbed # each kubelet's cgroupRoot is /ckpt-testbed/<node> in every hierarchy

# Paths inside every node (see files/node-init.sh and prepare_node_root in up.d/node.sh).
NODE_KUBECONFIG=/etc/testbed/kubeconfig   # the admin's, for tools run inside a node
NODE_BIN=/usr/local/bin                   # the binaries built from the Go module proxy
NODE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
node_cri_sock() {
  case $(node_runtime "$1") in
    crio) echo /run/crio/crio.sock ;;
    containerd) echo /run/containerd/containerd.sock ;;
  esac
}

# Every process the testbed starts carries this variable. `down` uses it to refuse to kill a
# recycled PID and to find anything a crashed `up` failed to record.
MARK=CKPT_TESTBED_STATE=$STATE

# The per-node processes, in start order (the product itself runs as pods: see install_product).
agents() { echo "$(node_runtime "$1") kubelet kube-proxy"; }

log() { printf '[testbed %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
require_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# A wrong TESTBED_STATE must never make `down` delete something else.
check_state_path() {
  case "$STATE" in
    /*/*) ;;
    *) die "TESTBED_STATE=$STATE must be an absolute path at least two levels deep" ;;
  esac
  case "$STATE" in *' '*) die "TESTBED_STATE must not contain spaces" ;; esac
}

# Node list: TESTBED_NODES is either a count ("3") or names ("node1 node2"). Once up, the
# state dir is the truth, so tools started later agree with what `up` actually built.
node_list() {
  if [ -f "$STATE/nodes.list" ]; then cat "$STATE/nodes.list"; return; fi
  local spec=${TESTBED_NODES:-2}
  if [[ $spec =~ ^[0-9]+$ ]]; then
    local i out=""
    for ((i = 1; i <= spec; i++)); do out+="node$i "; done
    echo "${out% }"
  else
    echo "$spec"
  fi
}

# node1 -> 1 (its position in the node list); the node's IP is $NET.(10+index).
node_index() {
  local i=1 n
  for n in $(node_list); do
    [ "$n" = "$1" ] && { echo "$i"; return; }
    i=$((i + 1))
  done
  return 1
}

node_dir() { echo "$STATE/nodes/$1"; }
node_ip() { echo "$NET.$((10 + $(node_index "$1")))"; }
node_pod_subnet() { echo "10.88.$(node_index "$1").0/24"; }

# Debian mirror, read from the host's apt configuration at run time (never hard-coded).
debian_mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  echo "${m%/}"
}

# ---------------------------------------------------------------- processes

# pid_ours PID: alive and started by this testbed (carries $MARK), so safe to signal.
pid_ours() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/environ" ] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "$MARK"
}

pidfile_alive() { [ -f "$1" ] && pid_ours "$(cat "$1")"; }

# All live PIDs carrying $MARK (whatever recorded them or not).
marked_pids() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    [ "$p" = "$BASHPID" ] && continue
    pid_ours "$p" && echo "$p"
  done
  return 0
}

# start_daemon PIDFILE LOGFILE CMD...: detached (own session, no terminal) with $MARK set.
# In a non-interactive shell a background job is not a process-group leader, so setsid(1)
# calls setsid() in place instead of forking, and $! stays the daemon's PID through the
# exec chain (setsid -> env -> CMD).
start_daemon() {
  local pidfile=$1 logfile=$2
  shift 2
  mkdir -p "$(dirname "$logfile")" "$(dirname "$pidfile")"
  # 9>&-: do not hand the up/down lock (fd 9) to a daemon, it would hold it forever
  setsid env "$MARK" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  local pid=$! i
  echo "$pid" >"$pidfile"
  disown "$pid"   # not our job any more: no "Killed" notice when down stops it
  # The mark is in the environment only once `env` has exec'd the daemon: until then
  # pidfile_alive would call a starting daemon dead.
  for ((i = 0; i < 100; i++)); do
    pid_ours "$pid" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.02
  done
}

# stop_pid PID [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period. Only ours.
stop_pid() {
  local pid=$1 grace=${2:-10} i
  pid_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    pid_ours "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for ${grace}s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 5 || log "pid $pid survived SIGKILL"
}

wait_gone() {
  local pid=$1 secs=${2:-5} i
  for ((i = 0; i < secs * 10; i++)); do
    [ -d "/proc/$pid" ] || return 0
    # a zombie is gone for our purposes (its parent reaps it)
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && return 0
    sleep 0.1
  done
  return 1
}

# children PID: direct children of a process.
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

# ---------------------------------------------------------------- nodes

node_init_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null; }

# node_nsenter_argv NODE: sets NSENTER to the argv prefix that runs a command in all of NODE's
# namespaces with a clean environment (the host's KUBECONFIG etc. would point at host paths).
node_nsenter_argv() {
  local node=$1 pid
  pid=$(node_init_pid "$node") || die "node $node is not up (no $(node_dir "$node")/pid)"
  pid_ours "$pid" || die "node $node is not running (init pid $pid is gone)"
  NSENTER=(env "$MARK" nsenter -t "$pid" -m -u -i -n -p -r -w -- env -i "$MARK" PATH="$NODE_PATH" HOME=/root
    TERM="${TERM:-dumb}" KUBECONFIG="$NODE_KUBECONFIG" CONTAINER_RUNTIME_ENDPOINT="unix://$(node_cri_sock "$node")"
    CONTAINERD_ADDRESS=/run/containerd/containerd.sock CONTAINERD_NAMESPACE=k8s.io)
  local v
  for v in RUST_LOG RUST_BACKTRACE; do
    [ -n "${!v:-}" ] && NSENTER+=("$v=${!v}")
  done
  return 0
}

# node_enter NODE CMD...: run CMD inside NODE.
node_enter() {
  local node=$1
  shift
  node_nsenter_argv "$node"
  "${NSENTER[@]}" "$@"
}

# Command line of one agent inside NODE (paths are the node's own; see prepare_node_root).
agent_cmd() {
  local name=$1 node=$2 extra_var line
  case $name in
    containerd) line="$NODE_BIN/containerd --config /etc/containerd/config.toml" ;;
    crio) line="$NODE_BIN/crio" ;;
    kubelet) line="$NODE_BIN/kubelet --config=/etc/kubernetes/kubelet.yaml --kubeconfig=/etc/kubernetes/kubelet.kubeconfig --hostname-override=$node --node-ip=$(node_ip "$node") --image-credential-provider-config=/etc/kubernetes/credential-provider.yaml --image-credential-provider-bin-dir=$CREDENTIAL_PROVIDER_DIR" ;;
    kube-proxy) line="$NODE_BIN/kube-proxy --config=/etc/kubernetes/kube-proxy.yaml" ;;
    *) return 1 ;;
  esac
  # Extra flags for tests: TESTBED_KUBELET_ARGS, TESTBED_CRIO_ARGS, TESTBED_CONTAINERD_ARGS, ...
  extra_var=TESTBED_$(echo "$name" | tr 'a-z-' 'A-Z_')_ARGS
  echo "$line${!extra_var:+ ${!extra_var}}"
}

# agent_start NAME NODE: start NAME in NODE's namespaces; record its *host* PID.
# nsenter forks when it enters a pid namespace, so the agent is nsenter's only child.
agent_start() {
  local name=$1 node=$2 d nspid child i
  d=$(node_dir "$node")
  if pidfile_alive "$d/$name.pid"; then
    log "$node: $name already running (pid $(cat "$d/$name.pid"))"
    return 0
  fi
  node_nsenter_argv "$node"
  # argv built here: a $(...) inside the background job would fork a child of its own and
  # confuse the child lookup below
  local -a cmd
  read -r -a cmd <<<"$(agent_cmd "$name" "$node")"
  echo "--- $(date -Is) start: ${cmd[*]}" >>"$d/$name.log"
  setsid "${NSENTER[@]}" "${cmd[@]}" >>"$d/$name.log" 2>&1 </dev/null 9>&- &
  nspid=$!
  disown $nspid
  child=""
  for ((i = 0; i < 50; i++)); do
    [ "$(cat "/proc/$nspid/comm" 2>/dev/null)" = nsenter ] && child=$(children "$nspid" | head -1)
    [ -n "$child" ] && break
    kill -0 "$nspid" 2>/dev/null || break
    sleep 0.1
  done
  # an agent that dies within half a second (bad flags, no kubeconfig...) is a failed start
  [ -n "$child" ] && sleep 0.5
  if [ -z "$child" ] || ! pid_ours "$child"; then
    log "$node: $name exited at once; last log lines:"
    tail -n 20 "$d/$name.log" >&2 || true
    return 1
  fi
  echo "$child" >"$d/$name.pid"
  log "$node: started $name (host pid $child, log $d/$name.log)"
}

agent_stop() {
  local name=$1 node=$2 sig=${3:-TERM} d
  d=$(node_dir "$node")
  [ -f "$d/$name.pid" ] || return 0
  if pidfile_alive "$d/$name.pid"; then
    if [ "$sig" = KILL ]; then
      kill -KILL "$(cat "$d/$name.pid")" 2>/dev/null || true
      wait_gone "$(cat "$d/$name.pid")" 5 || true
    else
      stop_pid "$(cat "$d/$name.pid")" 15
    fi
    log "$node: stopped $name"
  fi
  rm -f "$d/$name.pid"
}

# The runtime answers on its CRI socket (checked from inside the node with crictl).
runtime_ready() { node_enter "$1" crictl --timeout 2s version >/dev/null 2>&1; }

# ---------------------------------------------------------------- PKI and kubeconfigs

PKI=$STATE/pki

# pki_ca [NAME]: self-signed CA (NAME.key, NAME.crt; default ca) in $PKI.
pki_ca() {
  local name=${1:-ca}
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/$name.key" 2>/dev/null
  TESTBED_SAN=DNS:unused openssl req -x509 -new -config "$FILES/openssl.cnf" -extensions v3_ca \
    -key "$PKI/$name.key" -subj "/CN=ckpt-testbed-$name" -days 3650 -out "$PKI/$name.crt"
}

# pki_cert NAME client|server SUBJECT [SAN] [CA]: key + certificate signed by the testbed CA
# (or by CA, made with pki_ca CA).
pki_cert() {
  local name=$1 kind=$2 subj=$3 san=${4:-DNS:localhost} ca=${5:-ca}
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/$name.key" 2>/dev/null
  TESTBED_SAN=$san openssl req -new -config "$FILES/openssl.cnf" -key "$PKI/$name.key" -subj "$subj" \
    -out "$PKI/$name.csr"
  TESTBED_SAN=$san openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 3650 -extfile "$FILES/openssl.cnf" -extensions "v3_$kind" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# write_kubeconfig OUT USER CERT KEY: self-contained (CA and client credentials embedded), so
# the same file works on the host, inside the nodes, for kubectl and for kube-rs.
write_kubeconfig() {
  local out=$1 user=$2 cert=$3 key=$4
  (
    umask 077
    cat >"$out" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: ckpt-testbed
  cluster:
    server: $APISERVER
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$cert")
    client-key-data: $(base64 -w0 "$key")
contexts:
- name: ckpt-testbed
  context:
    cluster: ckpt-testbed
    user: $user
current-context: ckpt-testbed
KUBECONFIG
  )
}

# mint_kubeconfig USER [GROUP...]: a client certificate for USER (groups = O=) and its
# kubeconfig at $STATE/kubeconfigs/USER.kubeconfig (printed).
mint_kubeconfig() {
  local user=$1 subj="" g safe
  shift
  [ -f "$PKI/ca.key" ] || die "no testbed CA at $PKI (is the testbed up?)"
  for g in "$@"; do subj+="/O=$g"; done
  subj+="/CN=$user"
  safe=$(echo "$user" | tr -c 'A-Za-z0-9._\n-' '_')
  mkdir -p "$STATE/kubeconfigs"
  pki_cert "user-$safe" client "$subj"
  write_kubeconfig "$STATE/kubeconfigs/$safe.kubeconfig" "$user" "$PKI/user-$safe.crt" "$PKI/user-$safe.key"
  echo "$STATE/kubeconfigs/$safe.kubeconfig"
}
