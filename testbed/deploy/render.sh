# shellcheck shell=bash
# Sourced by testbed/up: `. testbed/deploy/render.sh`. Defines only functions; sets no shell
# options and no other variables.
#
# render_overlay OVERLAY IMAGES_FILE OUT_DIR
#   OVERLAY      the kustomization to deploy (bench/deploy: deploy/ with noded's disk share off)
#   IMAGES_FILE  what testbed/images wrote: one `REGISTRY/checkpoint-noded@sha256:...` line and
#                one `REGISTRY/checkpoint-controller@sha256:...` line
#   OUT_DIR      created if missing; gets kustomization.yaml (replaced atomically), ready for
#                `kubectl apply -k OUT_DIR`
# It points at the overlay by a path relative to OUT_DIR (kustomize refuses absolute paths in
# `resources`) and pins both images by digest with an `images:` entry each. OUT_DIR must not be
# inside deploy/ or testbed/deploy/. Returns non-zero, with a message on stderr, on bad input.
render_overlay() {
  local overlay=$1 images_file=$2 out_dir=$3 rel line name ref noded="" controller=""
  if [ $# -ne 3 ]; then
    echo "render_overlay: usage: render_overlay OVERLAY_DIR IMAGES_FILE OUT_DIR" >&2
    return 2
  fi
  [ -f "$overlay/kustomization.yaml" ] || {
    echo "render_overlay: $overlay has no kustomization.yaml" >&2
    return 2
  }
  [ -r "$images_file" ] || {
    echo "render_overlay: cannot read $images_file" >&2
    return 1
  }
  while IFS= read -r line || [ -n "$line" ]; do
    [ -n "$line" ] || continue
    if ! [[ $line =~ ^([^@[:space:]]+/)?(checkpoint-noded|checkpoint-controller)@sha256:[0-9a-f]{64}$ ]]; then
      echo "render_overlay: $images_file: not an image reference by digest: '$line'" >&2
      return 1
    fi
    name=${BASH_REMATCH[2]}
    case $name in
      checkpoint-noded) noded=$line ;;
      checkpoint-controller) controller=$line ;;
    esac
  done <"$images_file"
  if [ -z "$noded" ] || [ -z "$controller" ]; then
    echo "render_overlay: $images_file lacks checkpoint-noded or checkpoint-controller" >&2
    return 1
  fi
  mkdir -p "$out_dir" || return 1
  rel=$(realpath --relative-to="$(realpath "$out_dir")" "$(realpath "$overlay")") || return 1
  {
    echo "# Written by render_overlay (testbed/deploy/render.sh): $overlay with the"
    echo "# images testbed/images pushed, by digest."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "- $rel"
    echo "images:"
    for ref in "$noded" "$controller"; do
      name=${ref%@*}
      echo "- name: ${name##*/}"
      echo "  newName: $name"
      echo "  digest: ${ref#*@}"
    done
  } >"$out_dir/kustomization.yaml.new" || return 1
  mv "$out_dir/kustomization.yaml.new" "$out_dir/kustomization.yaml"
}
