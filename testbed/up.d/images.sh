# shellcheck shell=bash
# testbed/up: the images the tests run (busybox, the application images), cached like
# cache.sh's artifacts; start_registry pushes them (the product's own images come from
# testbed/images). Sourced by `up`.

# Images of unmodified Debian programs that the e2e tests migrate: NAME|PACKAGES|CMD. The
# packages and their dependencies are the one layer (files/debian-root.sh); the key-value
# server's image also holds what its clients' shell loops run (dash, coreutils' date +%s.%N,
# timeout and mkfifo; mawk writes the preload). Pushed as docker.io/ckpt-testbed/NAME, which
# both runtimes pull from the testbed registry, like busybox.
APP_IMAGES=(
  "redis|redis-server redis-tools dash coreutils mawk|redis-server --protected-mode no"
  "python|python3-minimal|python3"
)
APP_IMAGE_NAMESPACE=ckpt-testbed

# The busybox images (Cmd sh, and the sleeping "pause" tag used as pod sandbox), keyed by the
# busybox binary and the builder.
ensure_images() {
  local key final tmp
  key=$(cat "$NODE_ROOT/bin/busybox" "$TESTBED_DIR/mkimage.py" | sha256sum | cut -c1-12)
  final=$CACHE/images/busybox-$key
  IMAGES=$final
  [ -d "$final" ] && return 0
  tmp=$final.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  python3 "$TESTBED_DIR/mkimage.py" "$NODE_ROOT/bin/busybox" "$tmp/busybox.oci.tar" --ref latest --cmd sh >"$tmp/busybox.digest"
  python3 "$TESTBED_DIR/mkimage.py" "$NODE_ROOT/bin/busybox" "$tmp/pause.oci.tar" --ref pause \
    --cmd sleep 2147483647 >"$tmp/pause.digest"
  mv "$tmp" "$final"
  log "busybox images built: $(cat "$final/busybox.digest")"
}

# The application images, each in $CACHE/images/NAME-KEY/ (NAME.oci.tar, NAME.digest and
# `packages`, what went in), keyed by its packages, Cmd and both builders. APP_IMAGE_DIRS
# lists them for start_registry.
ensure_app_images() {
  local spec name pkgs cmd key final tmp t logf
  local -a pkg_list cmd_argv
  APP_IMAGE_DIRS=()
  for spec in "${APP_IMAGES[@]}"; do
    IFS='|' read -r name pkgs cmd <<<"$spec"
    key=$(key_of sid "$pkgs" "$cmd" "$(cat "$FILES/debian-root.sh" "$TESTBED_DIR/mkimage.py" | sha256sum)")
    final=$CACHE/images/$name-$key
    APP_IMAGE_DIRS+=("$final")
    [ -d "$final" ] && continue
    tmp=$final.tmp
    logf=$CACHE/logs/image-$name.log
    rm -rf --one-file-system "$tmp"
    mkdir -p "$tmp"
    t=$(date +%s)
    log "building the $name image from Debian sid: $pkgs (log: $logf)"
    read -r -a pkg_list <<<"$pkgs"
    read -r -a cmd_argv <<<"$cmd"
    {
      "$FILES/debian-root.sh" "$tmp/root" "$MIRROR" sid "${pkg_list[@]}" &&
        python3 "$TESTBED_DIR/mkimage.py" "$tmp/root" "$tmp/$name.oci.tar" --ref latest \
          --name "docker.io/$APP_IMAGE_NAMESPACE/$name" --cmd "${cmd_argv[@]}" >"$tmp/$name.digest"
    } >"$logf" 2>&1 || { tail -20 "$logf" >&2; die "building the $name image failed (log: $logf)"; }
    cp "$tmp/root/etc/testbed-image-packages" "$tmp/packages"
    rm -rf --one-file-system "$tmp/root"
    mv "$tmp" "$final"
    log "$name image built in $(($(date +%s) - t))s: $(du -h "$final/$name.oci.tar" | cut -f1), $(cat "$final/$name.digest")"
  done
}
