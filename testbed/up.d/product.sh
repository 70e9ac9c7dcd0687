# shellcheck shell=bash
# testbed/up: the product, installed as users install it. Sourced by `up`; defines only
# functions.

# The product as users run it: images of the workspace's binaries (testbed/deploy/'s
# Containerfiles, laid out as deploy/Containerfile's), pushed to the testbed registry, and the
# Helm chart deploy/chart installed with the seed's names (deploy/seed-values.yaml) and the
# testbed's settings
# (testbed/deploy/values.yaml), those images by digest. TESTBED_DEPLOY_OVERLAY instead names a
# kustomization to `kubectl apply -k` (bench/run deploys deploy/, the chart's rendering, so).
install_product() {
  TESTBED_BASE_BUSYBOX=$NODE_ROOT/bin/busybox "$TESTBED_DIR/images" "$STATE/images" >>"$STATE/logs/images.log" 2>&1 ||
    { tail -20 "$STATE/logs/images.log" >&2; die "building the product's images failed"; }
  # the CA of the registries checkpoints are pushed to (the testbed's, which signs them), in
  # noded's namespace: noded reads it when it starts, so before it starts
  kubectl_ -n kube-system create configmap checkpoint-registry-ca \
    --from-file=ca.crt="$PKI/ca.crt" --dry-run=client -o yaml |
    kubectl_ apply -f - >>"$STATE/logs/deploy.log" 2>&1 || die "creating ConfigMap checkpoint-registry-ca failed"
  if [ -n "${TESTBED_DEPLOY_OVERLAY:-}" ]; then
    # shellcheck source=deploy/render.sh
    . "$TESTBED_DIR/deploy/render.sh"
    render_overlay "$TESTBED_DEPLOY_OVERLAY" "$STATE/images" "$STATE/deploy"
    kubectl_ apply -k "$STATE/deploy" >>"$STATE/logs/deploy.log" 2>&1 ||
      { tail -20 "$STATE/logs/deploy.log" >&2; die "kubectl apply -k $STATE/deploy failed"; }
  else
    helm_install
  fi
  # what the install asks the cluster admin for: the CA of the apiserver's webhook client
  # certificate, in the controller's namespace, which the install makes (its pods wait for it)
  kubectl_ -n "$CONTROLLER_NAMESPACE" create configmap checkpoint-webhook-client-ca \
    --from-file=ca.crt="$PKI/webhook-client-ca.crt" --dry-run=client -o yaml |
    kubectl_ apply -f - >>"$STATE/logs/deploy.log" 2>&1 || die "creating ConfigMap checkpoint-webhook-client-ca failed"
  wait_product
}

# `helm upgrade --install` of release checkpointing (namespace kube-system: the chart makes the
# controller's namespace itself) with the images testbed/images pushed, by digest.
helm_install() {
  local ref values=(-f "$REPO_DIR/deploy/seed-values.yaml") sets=()
  values+=(-f "$TESTBED_DIR/deploy/values.yaml")
  while IFS= read -r ref; do
    case ${ref%@*} in
      */checkpoint-noded) sets+=(--set "noded.image.repository=${ref%@*}" --set "noded.image.digest=${ref#*@}") ;;
      */checkpoint-controller) sets+=(--set "controller.image.repository=${ref%@*}" --set "controller.image.digest=${ref#*@}") ;;
    esac
  done <"$STATE/images"
  [ ${#sets[@]} = 8 ] || die "$STATE/images names no checkpoint-noded and checkpoint-controller images"
  "$CACHE/bin/helm" --kubeconfig "$STATE/kubeconfig" upgrade --install checkpointing \
    "$REPO_DIR/deploy/chart" --namespace kube-system "${values[@]}" "${sets[@]}" \
    >>"$STATE/logs/deploy.log" 2>&1 ||
    { tail -20 "$STATE/logs/deploy.log" >&2; die "helm upgrade --install of deploy/chart failed"; }
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
