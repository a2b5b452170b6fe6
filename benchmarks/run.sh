#!/usr/bin/env bash
# Runs the .NET harness and the PyTorch eager peer back to back with the same thread count, then prints
# our/their ratios for every scenario both ran. Machines are shared and noisy: compare ratios, not seconds.
# Usage: benchmarks/run.sh [--quick] [--threads N] [--only a,b]     (default threads: 1)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=1; ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
OUT=${BENCH_OUT:-benchmarks/results}
mkdir -p "$OUT"
bash benchmarks/peer/install.sh >/dev/null
dotnet build benchmarks/Microsoft.ML.Orpo.Benchmarks -c Release -v q -nologo >/dev/null
BIN=benchmarks/Microsoft.ML.Orpo.Benchmarks/bin/Release/net10.0/Microsoft.ML.Orpo.Benchmarks
# The peer must not inherit per-core OpenBLAS overrides meant for numpy (see the environment notes).
echo "== ours (TorchSharp, $THREADS threads)"
"$BIN" --threads "$THREADS" --out "$OUT/ours.jsonl" "${ARGS[@]}"
echo "== peer (PyTorch eager, $THREADS threads)"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 benchmarks/peer/orpo_peer.py --threads "$THREADS" --out "$OUT/peer.jsonl" "${ARGS[@]}"
echo "== ours / peer"
/usr/bin/python3 benchmarks/compare.py "$OUT/ours.jsonl" "$OUT/peer.jsonl"
