#!/usr/bin/env bash
# Build lakeshard's image with buildah (no Docker engine needed) or docker.
#   infra/docker/build.sh [TAG]        (default localhost/lakeshard:latest)
# BASE_IMAGE picks the base (default debian:bookworm-slim). With LAKESHARD_DEBOOTSTRAP=1 the base
# is a Debian bookworm made here with debootstrap and cached in ~/.cache/lakeshard/images, for
# machines that cannot pull from a registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-localhost/lakeshard:latest}
cache=${LAKESHARD_CACHE:-$HOME/.cache/lakeshard}
context=build/image
rm -rf "$context" && mkdir -p "$context/context/src"
cp infra/docker/Dockerfile "$context/"
cp -r setup.cfg pyproject.toml README.md pipelines jobs schemas "$context/context/src/"
find "$context/context/src" -name __pycache__ -prune -exec rm -rf {} +
jars=$(.venv/bin/python -c "from pipelines.jvm import jars_dir; print(jars_dir())")
mkdir -p "$context/context/jars" && cp -r "$jars"/. "$context/context/jars/"  # the jars and their .complete mark

base_args=()
if [[ "${LAKESHARD_DEBOOTSTRAP:-0}" == 1 ]]; then
    rootfs_tar="$cache/images/bookworm-minbase.tar"
    if [[ ! -f "$rootfs_tar" ]]; then
        mkdir -p "$cache/images"
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
        tar -C "$rootfs" -c . > "$rootfs_tar.partial" && mv "$rootfs_tar.partial" "$rootfs_tar"
        rm -rf "$rootfs"
    fi
    if ! buildah --storage-driver vfs inspect localhost/bookworm-base >/dev/null 2>&1; then
        base_ctx=$(mktemp -d)
        cp "$rootfs_tar" "$base_ctx/base.tar"
        printf 'FROM scratch\nADD base.tar /\nCMD ["/bin/bash"]\n' > "$base_ctx/Dockerfile"
        buildah --storage-driver vfs bud --isolation chroot -t localhost/bookworm-base "$base_ctx" >&2
        rm -rf "$base_ctx"
    fi
    base_args=(--build-arg BASE_IMAGE=localhost/bookworm-base)
fi

if command -v buildah >/dev/null; then
    # pip inside a build step trusts the host's CA bundle only when it is mounted and named.
    buildah --storage-driver vfs bud --isolation chroot --layers \
        --volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
        --build-arg PIP_CERT=/run/host-ca.crt "${base_args[@]}" -t "$tag" "$context" >&2
else
    docker build "${base_args[@]}" -t "$tag" "$context" >&2
fi
echo "$tag"
