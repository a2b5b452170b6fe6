#!/usr/bin/env bash
# Runs the .NET harness and the PyTorch eager peer with the same thread count, interleaved scenario by scenario
# (ours, then the peer's same scenario right after), then prints our/their ratios. The machines are shared and
# noisy: load drifts over minutes, so only ratios of neighbouring runs mean much; absolute seconds do not.
# Usage: benchmarks/run.sh [--quick] [--threads N] [--only a,b]     (default threads: 1)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=1; ARGS=(); ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
OUT=${BENCH_OUT:-benchmarks/results}
mkdir -p "$OUT"; : > "$OUT/ours.jsonl"; : > "$OUT/peer.jsonl"
bash benchmarks/peer/install.sh >/dev/null
dotnet build benchmarks/Microsoft.ML.Orpo.Benchmarks -c Release -v q -nologo >/dev/null
BIN=benchmarks/Microsoft.ML.Orpo.Benchmarks/bin/Release/net10.0/Microsoft.ML.Orpo.Benchmarks
PEER=benchmarks/peer/orpo_peer.py
ONLY_ARGS=(); [ -n "$ONLY" ] && ONLY_ARGS=(--only "$ONLY")
PEER_SCENARIOS=$(/usr/bin/python3 "$PEER" --list "${ARGS[@]}")
echo "== ours (TorchSharp) and peer (PyTorch eager), $THREADS thread(s), interleaved"
for s in $("$BIN" --list "${ONLY_ARGS[@]}" "${ARGS[@]}"); do
  "$BIN" --threads "$THREADS" --only "$s" "${ARGS[@]}" | grep '^{' | grep -F "\"scenario\":\"$s\"" | tee -a "$OUT/ours.jsonl" || true
  if grep -qx -- "$s" <<<"$PEER_SCENARIOS"; then
    # The peer must not inherit per-core OpenBLAS overrides meant for old numpy builds (see the environment notes).
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "$PEER" --threads "$THREADS" --only "$s" "${ARGS[@]}" \
      | grep '^{' | grep -F "\"scenario\": \"$s\"" | tee -a "$OUT/peer.jsonl" || true
  fi
done
echo "== ours / peer"
/usr/bin/python3 benchmarks/compare.py "$OUT/ours.jsonl" "$OUT/peer.jsonl"
