#!/usr/bin/env bash
# Build a server the tests need from the Go module proxy once (a Prometheus Pushgateway or
# Alertmanager for monitoring, Toxiproxy for storage faults); the binary is cached beside the
# JVM artifacts (~/.cache/lakeshard/bin) and its path printed.
#   infra/go/build.sh pushgateway|alertmanager|toxiproxy
# The proxy may refuse a module's version list while serving a named version, and `go install
# module@version` then fails on its deprecation lookup, so each is built through a throwaway module.
# Alertmanager's web UI embeds ui/app/dist, which its module zip lacks: the build copies the
# module, adds a one-line index.html (the API, which is all lakeshard uses, does not need the UI)
# and builds against that copy.
set -euo pipefail
name=${1:?usage: build.sh pushgateway|alertmanager|toxiproxy}
case "$name" in
    pushgateway)
        module=github.com/prometheus/pushgateway
        version=${LAKESHARD_PUSHGATEWAY_VERSION:-v1.11.0}
        package=$module ;;
    alertmanager)
        module=github.com/prometheus/alertmanager
        version=${LAKESHARD_ALERTMANAGER_VERSION:-v0.35.0}
        package=$module/cmd/alertmanager ;;
    toxiproxy)
        module=github.com/Shopify/toxiproxy/v2
        version=${LAKESHARD_TOXIPROXY_VERSION:-v2.5.0}
        package=$module/cmd/server ;;
    *) echo "unknown server: $name (pushgateway, alertmanager or toxiproxy)" >&2; exit 2 ;;
esac
cache=${LAKESHARD_CACHE:-$HOME/.cache/lakeshard}
bin="$cache/bin/$name"
stamp="$bin.$version"
if [[ -x "$bin" && -f "$stamp" ]]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$cache/bin"
# Two test workers may ask at once: one builds, the other waits and finds it built.
exec 9>"$bin.lock"
flock 9
if [[ -x "$bin" && -f "$stamp" ]]; then
    echo "$bin"
    exit 0
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "building $name $version with $(go version) (about a minute on 2 cores)..." >&2
started=$SECONDS
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cd "$work"
go mod init lakeshard.build/"$name" >/dev/null 2>&1
printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > tools.go
go get "$module@$version" >/dev/null 2>&1
if [[ "$name" == alertmanager ]]; then
    source_dir=$(go list -m -f '{{.Dir}}' "$module")
    cp -r "$source_dir" "$work/src"
    chmod -R u+w "$work/src"
    mkdir -p "$work/src/ui/app/dist"
    echo '<!doctype html><title>Alertmanager</title>' > "$work/src/ui/app/dist/index.html"
    go mod edit -replace "$module=$work/src"
    go mod tidy >/dev/null 2>&1
fi
go build -o "$bin" "$package"
touch "$stamp"
echo "built $name in $((SECONDS - started)) s" >&2
echo "$bin"
