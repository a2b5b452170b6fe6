#!/usr/bin/env bash
# Runs the .NET harness and the PyTorch eager peer with the same thread count, interleaved scenario by scenario
# (ours, then the peer's same scenario right after), then prints our/their ratios. The machines are shared and
# noisy: load drifts over minutes, so only ratios of neighbouring runs mean much; absolute seconds do not.
#
# The peer is the strongest we can configure, since that is the one to beat: the fastest correct OpenBLAS kernel
# (benchmarks/peer/blas_probe.py, once per machine and thread count, cached in the results folder; --reprobe redoes
# it) and glibc settings that keep freed memory (PEER_MALLOC below: PyTorch's large per-step tensors are otherwise
# mapped and faulted in anew every step). Our side runs as shipped, with glibc defaults: the library must be fast
# without a process-wide setting (the same settings measured +1-3% for ours, see the README's "Fair peer").
# --default-peer also runs the peer as installed (auto-detected kernel, glibc defaults) beside it.
# Generation has a second peer, llama.cpp (benchmarks/llamacpp: node-llama-cpp from npm, CPU only, the same threads, f32
# KV cache): right after our gen.stories260K.cache.b1 and gen.llama41m.cache.b1 it decodes the same prompt ids from the
# same models exported as F32 GGUF (skipped, with the reason printed, where node, npm or the registry is missing).
# Usage: benchmarks/run.sh [--quick] [--threads N] [--only a,b] [--reprobe] [--default-peer]   (default threads: 1)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=1; ARGS=(); ONLY=""; REPROBE=(); DEFAULT_PEER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --reprobe) REPROBE=(--reprobe); shift ;;
    --default-peer) DEFAULT_PEER=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
OUT=${BENCH_OUT:-benchmarks/results}
mkdir -p "$OUT"; : > "$OUT/ours.jsonl"; : > "$OUT/peer.jsonl"; : > "$OUT/peer-default.jsonl"; : > "$OUT/llamacpp.jsonl"
bash benchmarks/peer/install.sh >/dev/null
# The peer must not inherit per-core OpenBLAS overrides meant for old numpy builds (see the environment notes):
# it gets exactly the core type the probe chose, or none for "auto".
PEER_MALLOC=(MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824)
PROBE=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 benchmarks/peer/blas_probe.py --threads "$THREADS" \
  --cache "$OUT/blas-probe.$(hostname).t$THREADS.json" "${REPROBE[@]}")
echo "$PROBE" > "$OUT/blas-probe.jsonl"
CORE=$(/usr/bin/python3 -c 'import json, sys; print(json.loads(sys.argv[1])["chosen"])' "$PROBE")
PEER_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "${PEER_MALLOC[@]}")
[ "$CORE" != auto ] && PEER_ENV+=(OPENBLAS_CORETYPE="$CORE")
echo "== peer: OPENBLAS_CORETYPE=${CORE/#auto/(unset: auto-detected)} ${PEER_MALLOC[*]}; ours: glibc defaults"
# BENCH_BIN: a harness built beforehand (lora.sh builds once and copies it, so that every round measures the same
# build whatever is edited or rebuilt meanwhile); otherwise build it here.
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
else
  dotnet build benchmarks/Microsoft.ML.Orpo.Benchmarks -c Release -v q -nologo >/dev/null
  BIN=benchmarks/Microsoft.ML.Orpo.Benchmarks/bin/Release/net10.0/Microsoft.ML.Orpo.Benchmarks
fi
PEER=benchmarks/peer/orpo_peer.py
ONLY_ARGS=(); [ -n "$ONLY" ] && ONLY_ARGS=(--only "$ONLY")
PEER_SCENARIOS=$(/usr/bin/python3 "$PEER" --list "${ARGS[@]}")
SCENARIOS=$("$BIN" --list "${ONLY_ARGS[@]}" "${ARGS[@]}")
LLAMACPP_SCENARIOS="gen.stories260K.cache.b1 gen.llama41m.cache.b1"; LLAMACPP=""
if grep -qxE 'gen\.(stories260K|llama41m)\.cache\.b1' <<<"$SCENARIOS"; then
  if LLAMACPP=$(bash benchmarks/llamacpp/install.sh 2>"$OUT/llamacpp-install.log"); then
    GGUF="$(cd "$OUT" && pwd)/gguf"
    "$BIN" --export-gguf "$GGUF" "${ARGS[@]}" >/dev/null
    echo "== llama.cpp peer: $LLAMACPP (models, prompt ids and our ids in $GGUF)"
  else
    echo "== llama.cpp peer SKIPPED: $(tail -1 "$OUT/llamacpp-install.log")"; LLAMACPP=""
  fi
fi
NEW_TOKENS=256; [[ " ${ARGS[*]} " == *" --quick "* ]] && NEW_TOKENS=64
echo "== ours (TorchSharp) and peer (PyTorch eager), $THREADS thread(s), interleaved"
for s in $SCENARIOS; do
  "$BIN" --threads "$THREADS" --only "$s" "${ARGS[@]}" | grep '^{' | grep -F "\"scenario\":\"$s\"" | tee -a "$OUT/ours.jsonl" || true
  if [ -n "$LLAMACPP" ] && [[ " $LLAMACPP_SCENARIOS " == *" $s "* ]]; then
    model=${s#gen.}; model=${model%.cache.b1}
    (cd "$LLAMACPP" && node llamacpp_peer.mjs --dir "$GGUF" --model "$model" --threads "$THREADS" --new "$NEW_TOKENS") \
      | grep '^{' | tee -a "$OUT/llamacpp.jsonl" || true
  fi
  if grep -qx -- "$s" <<<"$PEER_SCENARIOS"; then
    "${PEER_ENV[@]}" /usr/bin/python3 "$PEER" --threads "$THREADS" --only "$s" "${ARGS[@]}" \
      | grep '^{' | grep -F "\"scenario\": \"$s\"" | tee -a "$OUT/peer.jsonl" || true
    if [ "$DEFAULT_PEER" = 1 ]; then
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "$PEER" --threads "$THREADS" --only "$s" "${ARGS[@]}" \
        | grep '^{' | grep -F "\"scenario\": \"$s\"" | tee -a "$OUT/peer-default.jsonl" || true
    fi
  fi
done
echo "== ours / peer"
/usr/bin/python3 benchmarks/compare.py "$OUT/ours.jsonl" "$OUT/peer.jsonl" "$OUT/peer-default.jsonl" "$OUT/llamacpp.jsonl"
