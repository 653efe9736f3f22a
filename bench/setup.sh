#!/usr/bin/env bash
# Install what the benchmark needs besides crawler itself: nginx and the native peers
# (Debian packages, as root). The Python peers use this project's own environment.
set -euo pipefail
missing=()
for pair in aria2c:aria2 nginx:nginx wget:wget curl:curl xargs:findutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
echo "bench: nginx, aria2c, wget, curl ready"
