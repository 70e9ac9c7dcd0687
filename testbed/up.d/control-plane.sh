# shellcheck shell=bash
# testbed/up: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on the
# host, and the admin's kubectl. Sourced by `up`; defines only functions.

apiserver_ready() {
  [ "$(curl -s --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$APISERVER/readyz")" = ok ]
}
component_healthy() { [ "$(curl -sk --max-time 2 "https://127.0.0.1:$1/healthz")" = ok ]; }

start_etcd() {
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  # sid's etcd needs sid's glibc: run it chrooted into the node root, with the data dir
  # bound in from the state dir (mounts private to its own mount namespace).
  start_daemon "$STATE/pids/etcd.pid" "$STATE/logs/etcd.log" \
    unshare -m -- "$FILES/in-root" "$NODE_ROOT" --bind "$STATE/etcd:/var/lib/testbed-etcd" -- \
    /usr/bin/etcd --name testbed --data-dir /var/lib/testbed-etcd \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health" ||
    { tail -20 "$STATE/logs/etcd.log" >&2; die "etcd did not start"; }
}

start_apiserver() {
  local t0
  t0=$(date +%s.%N)
  # Admission: the defaults (ServiceAccount, NodeRestriction via Node authz, ...); the
  # requestheader/proxy-client pair completes the aggregation layer (kcm and scheduler read
  # it for delegated authentication). The audit log records our daemons' calls (counted by the
  # e2e API-load test). Webhooks are called through their Service's ClusterIP,
  # which the host routes to a node's kube-proxy (see route_network).
  start_daemon "$STATE/pids/kube-apiserver.pid" "$STATE/logs/kube-apiserver.log" \
    "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$HOST_IP" --advertise-address="$HOST_IP" --secure-port="$API_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --admission-control-config-file="$PKI/admission.yaml" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true --profiling=false \
    --audit-policy-file="$FILES/kubernetes/audit-policy.yaml" --audit-log-format=json \
    --audit-log-path="$STATE/logs/audit.log" --audit-log-maxsize=200 --audit-log-maxbackup=1
  local i
  for ((i = 0; i < 600; i++)); do
    apiserver_ready && break
    pidfile_alive "$STATE/pids/kube-apiserver.pid" || { tail -30 "$STATE/logs/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
    sleep 0.1
  done
  apiserver_ready || { tail -30 "$STATE/logs/kube-apiserver.log" >&2; die "kube-apiserver not ready after 60s"; }
  log "kube-apiserver ready at $APISERVER after $(python3 -c "print(round($(date +%s.%N) - $t0, 1))")s"
}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

start_component() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$STATE/$name"
  start_daemon "$STATE/pids/$name.pid" "$STATE/logs/$name.log" "$K8S_BIN/$name" \
    --kubeconfig="$PKI/$name.kubeconfig" \
    --authentication-kubeconfig="$PKI/$name.kubeconfig" --authorization-kubeconfig="$PKI/$name.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$port" --cert-dir="$STATE/$name" \
    --leader-elect=false "$@"
  wait_for 60 "$name /healthz" component_healthy "$port" ||
    { tail -n 20 "$STATE/logs/$name.log" >&2; die "$name is not healthy"; }
  log "$name healthy on 127.0.0.1:$port"
}

start_controllers() {
  # The apiserver's identity towards the kubelets gets the kubelet API role.
  kubectl_ apply -f - >/dev/null <<'EOF2'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ckpt-testbed:kube-apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
EOF2
  # Every controller with its own ServiceAccount, as in a kubeadm cluster.
  start_component kube-controller-manager "$KCM_PORT" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-cidr="$CLUSTER_CIDR" --service-cluster-ip-range="$SERVICE_CIDR"
  start_component kube-scheduler "$SCHED_PORT"
}
