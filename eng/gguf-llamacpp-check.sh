#!/usr/bin/env bash
# Exports stories260K as GGUF (F32, F16, Q8_0) and runs it in real llama.cpp through node-llama-cpp@3.21.1 from npm:
# its greedy 256 tokens from BOS must equal ours in F32; F16 and Q8_0 agreement is printed.
# Exits 0 with a printed reason when node, npm or the npm registry is unavailable.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=3.21.1
start=$SECONDS

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "gguf-llamacpp-check: SKIPPED (node or npm is not installed)"; exit 0
fi
if ! timeout 60 npm view "node-llama-cpp@$version" version >/dev/null 2>&1; then
    echo "gguf-llamacpp-check: SKIPPED (the npm registry cannot be reached)"; exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/npm" "$work/out"
# The prebuilt llama.cpp binaries come inside npm packages (@node-llama-cpp/linux-x64...); no install script is needed.
(cd "$work/npm" && npm init -y >/dev/null && npm install --no-audit --no-fund --ignore-scripts "node-llama-cpp@$version" >/dev/null)
cp "$repo/eng/gguf-llamacpp-check.mjs" "$work/npm/"

cd "$repo/test/Microsoft.ML.Orpo.Tests"
dotnet build --nologo -v q >/dev/null
ORPO_GGUF_EXPORT_DIR="$work/out" dotnet test --no-build -- --filter "FullyQualifiedName~GgufLlamaCppTests.Stories260KInF32" >/dev/null
ls -l "$work/out"/*.gguf | awk '{print "gguf-llamacpp-check: " $5 " bytes " $NF}' | sed "s|$work/out/||"
status=0
(cd "$work/npm" && node gguf-llamacpp-check.mjs "$work/out" 256) || status=$?
echo "gguf-llamacpp-check: node-llama-cpp@$version, $((SECONDS - start)) s"
exit $status
