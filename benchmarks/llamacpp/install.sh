#!/usr/bin/env bash
# Installs node-llama-cpp (prebuilt llama.cpp inside npm packages, as eng/gguf-llamacpp-check.sh does) into a cache
# folder outside the repository, once, and copies the runner beside it. Prints that folder on stdout.
# Exits 1 with a reason on stderr when node, npm or the npm registry is unavailable.
set -euo pipefail
version=3.21.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${LLAMACPP_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orpo-benchmarks/node-llama-cpp-$version}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node or npm is not installed" >&2; exit 1
fi
if [ ! -f "$dir/node_modules/node-llama-cpp/package.json" ]; then
  if ! timeout 60 npm view "node-llama-cpp@$version" version >/dev/null 2>&1; then
    echo "the npm registry cannot be reached" >&2; exit 1
  fi
  mkdir -p "$dir"
  # --ignore-scripts: the prebuilt binaries come inside @node-llama-cpp/* packages; nothing is compiled.
  (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } \
    && npm install --no-audit --no-fund --ignore-scripts "node-llama-cpp@$version" >/dev/null)
fi
cp "$here/llamacpp_peer.mjs" "$dir/"
echo "$dir"
