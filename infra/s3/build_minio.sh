#!/usr/bin/env bash
# Build MinIO from the Go module proxy once; the binary is cached beside the JVM artifacts.
# MinIO tags releases as RELEASE.<date>, which Go does not read as versions, so the pin is the
# module proxy's pseudo-version of a commit on its main branch.
set -euo pipefail
version=${LAKESHARD_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
cache=${LAKESHARD_CACHE:-$HOME/.cache/lakeshard}
bin="$cache/bin/minio"
stamp="$bin.$version"
if [[ -x "$bin" && -f "$stamp" ]]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$cache/bin"
echo "building MinIO $version with $(go version) (several minutes on 2 cores)..." >&2
GOBIN="$cache/bin" GOTOOLCHAIN=local CGO_ENABLED=0 go install "github.com/minio/minio@$version"
touch "$stamp"
echo "$bin"
