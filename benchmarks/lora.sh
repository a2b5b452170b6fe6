#!/usr/bin/env bash
# LoRA against full fine-tuning, and against the PyTorch peer's LoRA: rounds of benchmarks/run.sh over the lora.*
# scenarios (each scenario in a process of its own, ours then the peer's same scenario right after, same threads),
# then benchmarks/lora_report.py: the ratios of every round, their medians and spread, and the targets. The first round
# also runs `matmul` (each side's GEMM peak), which the report's feasibility lines divide by.
# The 41.7M scenarios (4 pairs per pass, and 1 pair per pass with 4 accumulated: llama41m-micro) take ~2 minutes a
# round; the 0.5B shape with 1 pair per pass (qwen05b-micro) ~12 minutes (1 warm-up + 1 measured step per scenario,
# ours: full, LoRA fp32 base, LoRA bf16 base; the peer: LoRA fp32 base), so it runs in the first --rounds-05b rounds
# only. --all-05b adds the 0.5B shape with bf16 products (qwen05b-micro-bf16), with recomputed activations (qwen05b)
# and with 4 pairs stored (qwen05b-stored), another ~40 minutes.
# Usage: benchmarks/lora.sh [--rounds N] [--rounds-05b N] [--all-05b] [--threads N]   (defaults: 2, 1, off, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2; ROUNDS05=1; THREADS=1; SETS05="lora.qwen05b-micro."
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --rounds-05b) ROUNDS05="$2"; shift 2 ;;
    --all-05b) SETS05="lora.qwen05b-micro.,lora.qwen05b-micro-bf16.,lora.qwen05b.,lora.qwen05b-stored."; shift ;;
    --threads) THREADS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=${BENCH_OUT:-benchmarks/results}/lora
rm -rf "$OUT"; mkdir -p "$OUT"
# One build for every round, run from a copy: editing or rebuilding the sources while the rounds run (they take up to
# an hour) neither stops the run nor mixes two builds in one report. The native libraries (runtimes/, ~530 MB of
# libtorch, which a rebuild does not touch) are linked, not copied.
dotnet build benchmarks/Microsoft.ML.Orpo.Benchmarks -c Release -v q -nologo >/dev/null
BUILT="$(pwd)/benchmarks/Microsoft.ML.Orpo.Benchmarks/bin/Release/net10.0"
mkdir -p "$OUT/bin"
for f in "$BUILT"/*; do
  if [ "$(basename "$f")" = runtimes ]; then ln -s "$f" "$OUT/bin/runtimes"; else cp -r "$f" "$OUT/bin/"; fi
done
export BENCH_BIN="$(cd "$OUT/bin" && pwd)/Microsoft.ML.Orpo.Benchmarks"
for r in $(seq 1 "$ROUNDS"); do
  only="lora.llama41m"; [ "$r" -le "$ROUNDS05" ] && only="lora.llama41m,$SETS05"
  # The first round also measures each side's GEMM peak, for the report's feasibility lines.
  [ "$r" -eq 1 ] && only="matmul,$only"
  mkdir -p "$OUT/round$r"
  # The BLAS probe of round 1 serves every round.
  [ "$r" -gt 1 ] && cp "$OUT"/round1/blas-probe.*.json "$OUT/round$r/" 2>/dev/null || true
  echo "== round $r: $only"
  BENCH_OUT="$OUT/round$r" bash benchmarks/run.sh --threads "$THREADS" --only "$only"
done
/usr/bin/python3 benchmarks/lora_report.py "$OUT"/round* | tee "$OUT/report.txt"
