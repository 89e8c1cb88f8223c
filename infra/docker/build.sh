#!/usr/bin/env bash
# Build qtrust's images with the tags named in infra/docker/images.env.
#   infra/docker/build.sh cpu|cuda [extra build options...]
# Runs from anywhere; the build context is the repository root (see .dockerignore).
# CONTAINER_ENGINE=podman|docker|buildah picks the tool (default: podman, else docker).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=images.env
. "$here/images.env"
flavour="${1:?usage: build.sh cpu|cuda [build options...]}"
shift
case "$flavour" in
  cpu) tag="$QTRUST_IMAGE_CPU" ;;
  cuda) tag="$QTRUST_IMAGE_CUDA" ;;
  *) echo "build.sh: unknown flavour '$flavour' (cpu or cuda)" >&2; exit 2 ;;
esac
engine="${CONTAINER_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}"
format=()
if [ "$engine" = buildah ]; then sub=bud; else sub=build; fi
# podman and buildah write OCI images by default, which drop the Dockerfile's SHELL (pipefail).
if [ "$engine" != docker ]; then format=(--format docker); fi
set -x
exec "$engine" "$sub" "${format[@]}" -f "$here/Dockerfile.$flavour" -t "$tag" "$@" "$root"
