# shellcheck shell=bash
# testbed/up: the registry (plain and TLS) and the test images in it. Sourced by `up`;
# defines only functions.

start_registry() {
  mkdir -p "$STATE/registry/storage"
  sed -e "s|@STORAGE@|$STATE/registry/storage|" -e "s|@REGISTRY@|$REGISTRY|" "$FILES/registry.yml" \
    >"$STATE/registry/config.yml"
  start_daemon "$STATE/pids/registry.pid" "$STATE/logs/registry.log" \
    docker-registry serve "$STATE/registry/config.yml"
  wait_for 30 "registry on $REGISTRY" curl -sf "http://$REGISTRY/v2/" ||
    { tail -20 "$STATE/logs/registry.log" >&2; die "registry did not start"; }
  # the same storage over TLS on :443, as the nodes' stand-in for Docker Hub (see make_pki)
  sed -e "s|@STORAGE@|$STATE/registry/storage|" -e "s|@REGISTRY@|$HOST_IP:443|" "$FILES/registry.yml" \
    >"$STATE/registry/config-tls.yml"
  printf '  tls:\n    certificate: %s\n    key: %s\n' "$PKI/docker-hub.crt" "$PKI/docker-hub.key" >>"$STATE/registry/config-tls.yml"
  start_daemon "$STATE/pids/registry-tls.pid" "$STATE/logs/registry-tls.log" \
    docker-registry serve "$STATE/registry/config-tls.yml"
  wait_for 30 "registry on $HOST_IP:443" curl -sf --cacert "$PKI/ca.crt" "https://$HOST_IP:443/v2/" ||
    { tail -20 "$STATE/logs/registry-tls.log" >&2; die "TLS registry did not start"; }
  local img digest
  for img in busybox pause; do
    skopeo --policy "$FILES/policy.json" copy -q --dest-tls-verify=false \
      "oci-archive:$IMAGES/$img.oci.tar" "docker://$REGISTRY/library/busybox:${img/busybox/latest}" >>"$STATE/logs/registry-push.log" 2>&1 ||
      { tail -20 "$STATE/logs/registry-push.log" >&2; die "pushing $img failed"; }
  done
  digest=$(curl -sf -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/library/busybox/manifests/latest" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
  [ -n "$digest" ] || die "registry has no library/busybox:latest after push"
  echo "$digest" >"$STATE/busybox.digest"
  log "registry $REGISTRY serves library/busybox:latest ($digest) and :pause"
  local dir
  for dir in "${APP_IMAGE_DIRS[@]}"; do
    img=$(basename "$dir")
    img=${img%-*}
    skopeo --policy "$FILES/policy.json" copy -q --dest-tls-verify=false \
      "oci-archive:$dir/$img.oci.tar" "docker://$REGISTRY/$APP_IMAGE_NAMESPACE/$img:latest" >>"$STATE/logs/registry-push.log" 2>&1 ||
      { tail -20 "$STATE/logs/registry-push.log" >&2; die "pushing the $img image failed"; }
    log "registry $REGISTRY serves $APP_IMAGE_NAMESPACE/$img:latest ($(cat "$dir/$img.digest"))"
  done
}
