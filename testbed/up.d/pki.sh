# shellcheck shell=bash
# testbed/up: the cluster's PKI and kubeconfigs in $PKI (helpers: pki_* in lib.sh).
# Sourced by `up`; defines only functions.

make_pki() {
  local n
  log "PKI and kubeconfigs in $PKI"
  pki_ca
  pki_cert apiserver server /CN=kube-apiserver \
    "IP:$HOST_IP,IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_cert admin client "/O=system:masters/CN=testbed-admin"
  pki_cert kube-controller-manager client /CN=system:kube-controller-manager
  pki_cert kube-scheduler client /CN=system:kube-scheduler
  pki_cert kube-proxy client /CN=system:kube-proxy
  pki_cert front-proxy-client client /CN=front-proxy-client
  # the apiserver towards kubelets (logs, exec, port-forward, checkpoint): see start_controllers
  pki_cert apiserver-kubelet-client client /CN=kube-apiserver-kubelet-client
  # the apiserver towards admission webhooks: a CA of its own, so that only this certificate,
  # not every client the testbed CA signs, is let in by the restore webhook
  pki_ca webhook-client-ca
  pki_cert apiserver-webhook-client client /CN=kube-apiserver-webhook-client DNS:localhost webhook-client-ca
  write_admission_config
  # containerd restores re-pull the base image by name@digest through its default resolver,
  # ignoring hosts.toml mirrors: the nodes resolve Docker Hub's registry host to the testbed
  # registry, which also serves TLS with this certificate (the nodes trust the testbed CA).
  pki_cert docker-hub server /CN=testbed-docker-hub "DNS:$DOCKER_HUB_HOST,IP:$HOST_IP"
  # kubelets' serving certificate (:10250), valid for any node IP; their client identities
  # (system:node:NAME, what the Node authorizer and NodeRestriction admission expect)
  pki_cert kubelet-serving server /CN=testbed-kubelet "$(seq -s, -f "IP:$NET.%g" 11 30)"
  for n in $(node_list); do pki_cert "kubelet-$n" client "/O=system:nodes/CN=system:node:$n"; done
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  write_kubeconfig "$STATE/kubeconfig" testbed-admin "$PKI/admin.crt" "$PKI/admin.key"
  for n in kube-controller-manager kube-scheduler kube-proxy; do
    write_kubeconfig "$PKI/$n.kubeconfig" "system:$n" "$PKI/$n.crt" "$PKI/$n.key"
  done
  for n in $(node_list); do
    write_kubeconfig "$PKI/kubelet-$n.kubeconfig" "system:node:$n" "$PKI/kubelet-$n.crt" "$PKI/kubelet-$n.key"
  done
  # what every node sees, read-only, at /etc/testbed: the admin's kubeconfig for tools
  mkdir -p "$STATE/node-etc"
  cp "$STATE/kubeconfig" "$STATE/node-etc/kubeconfig"
  cp "$PKI/ca.crt" "$STATE/node-etc/ca.crt"
}

# The apiserver's admission configuration: it presents apiserver-webhook-client to the webhooks
# of the controller's namespace, as deploy/ asks cluster admins to.
write_admission_config() {
  cat >"$PKI/webhook-clients.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: '*.$CONTROLLER_NAMESPACE.svc'
  user:
    client-certificate: $PKI/apiserver-webhook-client.crt
    client-key: $PKI/apiserver-webhook-client.key
EOF
  cat >"$PKI/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $PKI/webhook-clients.kubeconfig
EOF
}
