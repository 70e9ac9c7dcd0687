# shellcheck shell=bash
# testbed/up: the product, installed as users install it. Sourced by `up`; defines only
# functions.

# The product as users run it: images built from deploy/'s Containerfiles with the workspace's
# binaries, pushed to the testbed registry, and `kubectl apply -k` of the testbed overlay of
# deploy/ for this runtime (with those images by digest; TESTBED_DEPLOY_OVERLAY names another
# kustomization, e.g. deploy/ itself).
install_product() {
  local overlay=$STATE/deploy
  TESTBED_BASE_BUSYBOX=$NODE_ROOT/bin/busybox "$TESTBED_DIR/images" "$STATE/images" >>"$STATE/logs/images.log" 2>&1 ||
    { tail -20 "$STATE/logs/images.log" >&2; die "building the product's images failed"; }
  # shellcheck source=deploy/render.sh
  . "$TESTBED_DIR/deploy/render.sh"
  render_overlay "${TESTBED_DEPLOY_OVERLAY:-$TESTBED_DIR/deploy/$(runtime)}" "$STATE/images" "$overlay"
  # what deploy/ asks the cluster admin for: the CA of the apiserver's webhook client certificate
  { kubectl_ get namespace "$CONTROLLER_NAMESPACE" || kubectl_ create namespace "$CONTROLLER_NAMESPACE"; } >>"$STATE/logs/deploy.log" 2>&1
  kubectl_ -n "$CONTROLLER_NAMESPACE" create configmap checkpoint-webhook-client-ca \
    --from-file=ca.crt="$PKI/webhook-client-ca.crt" --dry-run=client -o yaml |
    kubectl_ apply -f - >>"$STATE/logs/deploy.log" 2>&1 || die "creating ConfigMap checkpoint-webhook-client-ca failed"
  # and the CA of the registries checkpoints are pushed to (the testbed's, which signs them)
  kubectl_ -n kube-system create configmap checkpoint-registry-ca \
    --from-file=ca.crt="$PKI/ca.crt" --dry-run=client -o yaml |
    kubectl_ apply -f - >>"$STATE/logs/deploy.log" 2>&1 || die "creating ConfigMap checkpoint-registry-ca failed"
  kubectl_ apply -k "$overlay" >>"$STATE/logs/deploy.log" 2>&1 ||
    { tail -20 "$STATE/logs/deploy.log" >&2; die "kubectl apply -k $overlay failed"; }
  wait_product
}

webhook_has_ca() {
  [ -n "$(kubectl_ get mutatingwebhookconfiguration checkpointing-restore \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]
}

wait_product() {
  kubectl_ -n kube-system rollout status daemonset/container-checkpoint-sidecar --timeout=180s >>"$STATE/logs/deploy.log" 2>&1 ||
    { kubectl_ -n kube-system get pods -o wide >&2; die "DaemonSet container-checkpoint-sidecar is not ready"; }
  kubectl_ -n "$CONTROLLER_NAMESPACE" rollout status deployment/external-checkpointer-controller-manager --timeout=180s >>"$STATE/logs/deploy.log" 2>&1 ||
    { kubectl_ -n "$CONTROLLER_NAMESPACE" get pods -o wide >&2; die "the controller Deployment is not ready"; }
  # deploy/ installs the registration; the leading controller adds its CA.
  wait_for 60 "the restore webhook's CA" webhook_has_ca ||
    log "WARNING: MutatingWebhookConfiguration checkpointing-restore has no caBundle yet"
}
