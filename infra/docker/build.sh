#!/usr/bin/env bash
# Build lakeshard's image with buildah (no Docker engine needed) or docker.
#   infra/docker/build.sh [TAG]        (default localhost/lakeshard:latest)
# BASE_IMAGE picks the base (default debian:bookworm-slim). With LAKESHARD_DEBOOTSTRAP=1 the base
# is a Debian bookworm made here with debootstrap and cached in ~/.cache/lakeshard/images, for
# machines that cannot pull from a registry.
#
# The Dockerfile's two slow stages are built as images of their own, tagged by a hash of what they
# are made from, and reused while that holds: `runtime` (Java, Python, from the Dockerfile and the
# base) and `deps` (the dependencies, from setup.cfg and pyproject.toml too). Their superseded tags
# and the image TAG pointed at before are removed, so rebuilding does not pile up copies: buildah's
# vfs driver stores every layer as a whole copy of the file system (1.8 GB for this image).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-localhost/lakeshard:latest}
cache=${LAKESHARD_CACHE:-$HOME/.cache/lakeshard}
context=build/image
rm -rf "$context" && mkdir -p "$context/context/src" "$context/context/deps/pipelines"
cp infra/docker/Dockerfile "$context/"
cp -r setup.cfg pyproject.toml README.md pipelines jobs schemas "$context/context/src/"
find "$context/context/src" -name __pycache__ -prune -exec rm -rf {} +
# What the deps stage installs from: the project's metadata without its code.
cp setup.cfg pyproject.toml "$context/context/deps/"
cp pipelines/__init__.py "$context/context/deps/pipelines/"
: > "$context/context/deps/README.md"
jars=$(.venv/bin/python -c "from pipelines.jvm import jars_dir; print(jars_dir())")
mkdir -p "$context/context/jars" && cp -r "$jars"/. "$context/context/jars/"  # the jars and their .complete mark

if command -v buildah >/dev/null; then
    engine=(buildah --storage-driver vfs)
    # pip inside a build step trusts the host's CA bundle only when it is mounted and named.
    bud=("${engine[@]}" bud --isolation chroot --layers=false --force-rm
        --volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
        --build-arg PIP_CERT=/run/host-ca.crt)
    image_id() { "${engine[@]}" inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null; }
    tags() { "${engine[@]}" images --format '{{.Name}}:{{.Tag}}'; }
else
    engine=(docker)
    bud=(docker build)
    image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }
    tags() { docker images --format '{{.Repository}}:{{.Tag}}'; }
fi

base=${BASE_IMAGE:-debian:bookworm-slim}
if [[ "${LAKESHARD_DEBOOTSTRAP:-0}" == 1 ]]; then
    base=localhost/bookworm-base
    rootfs_tar="$cache/images/bookworm-minbase.tar"
    if [[ ! -f "$rootfs_tar" ]]; then
        mkdir -p "$cache/images"
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
        tar -C "$rootfs" -c . > "$rootfs_tar.partial" && mv "$rootfs_tar.partial" "$rootfs_tar"
        rm -rf "$rootfs"
    fi
    if ! image_id "$base" >/dev/null; then
        base_ctx=$(mktemp -d)
        cp "$rootfs_tar" "$base_ctx/base.tar"
        printf 'FROM scratch\nADD base.tar /\nCMD ["/bin/bash"]\n' > "$base_ctx/Dockerfile"
        "${bud[@]}" -t "$base" "$base_ctx" >&2
        rm -rf "$base_ctx"
    fi
fi

image_id "$base" >/dev/null || "${engine[@]}" pull "$base" >&2  # its ID is part of the stages' keys
key() { { echo "$base $(image_id "$base" || true)"; cat "$@"; } | sha256sum | cut -c1-16; }
stage() {  # stage NAME KEY-FILES...: the stage's image tag, built unless already there
    local name=$1 wanted
    shift
    wanted="localhost/lakeshard-$name:$(key "$@")"
    if ! image_id "$wanted" >/dev/null; then
        echo "building the $name stage as $wanted" >&2
        "${bud[@]}" --build-arg BASE_IMAGE="$base" --target "$name" -t "$wanted" "$context" >&2
    fi
    local old
    for old in $(tags | grep "^localhost/lakeshard-$name:" || true); do
        [[ "$old" == "$wanted" ]] || "${engine[@]}" rmi "$old" >/dev/null 2>&1 || true
    done
    echo "$wanted"
}
runtime=$(stage runtime infra/docker/Dockerfile)
deps=$(stage deps infra/docker/Dockerfile setup.cfg pyproject.toml pipelines/__init__.py)

before=$(image_id "$tag" || true)
"${bud[@]}" --build-arg BASE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$runtime" \
    --build-arg DEPS_IMAGE="$deps" -t "$tag" "$context" >&2
if [[ -n "$before" && "$before" != "$(image_id "$tag")" ]]; then
    "${engine[@]}" rmi "$before" >/dev/null 2>&1 || true  # still in use by another tag: kept
fi
echo "$tag"
