#!/usr/bin/env bash
# Install the Debian packages some tests use, where they are missing: `make test` calls this with
# chromium (the status page test opens the page in a real headless browser), buildah and
# debootstrap (the image test builds lakeshard's image on a Debian base it makes).
# Needs root and apt-get; elsewhere it says what it skipped, and those tests skip with the reason.
set -euo pipefail

missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: not installing ${missing[*]} (needs root and apt-get): the tests that use" \
        "them will skip and say so" >&2
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
if ! { apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; }; then
    echo "warning: apt-get could not install ${missing[*]}: the tests that use them will skip" >&2
fi
