#!/usr/bin/env bash
# Longer run of the file-reader mutation fuzzer (test/Microsoft.ML.Orpo.Tests/Reliability/FileReaderFuzzTests.cs).
#   ORPO_FUZZ_ITERATIONS  inputs per format (default here 20000; CI runs 400)
#   ORPO_FUZZ_SEED        fuzzer seed (default: a new one each run, printed so a failure can be replayed)
#   ORPO_FUZZ_FAILURES    folder that receives every input that failed badly (default: ./fuzz-failures)
#   FORMAT                run one format only, e.g. FORMAT=model-zip-payload (default: all)
# Usage: eng/fuzz.sh            (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

export ORPO_FUZZ_ITERATIONS="${ORPO_FUZZ_ITERATIONS:-20000}"
export ORPO_FUZZ_SEED="${ORPO_FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
export ORPO_FUZZ_FAILURES="${ORPO_FUZZ_FAILURES:-$PWD/fuzz-failures}"
filter="FullyQualifiedName~Reliability.FileReaderFuzzTests"
if [ -n "${FORMAT:-}" ]; then filter="$filter&DisplayName~$FORMAT"; fi

echo "fuzz: $ORPO_FUZZ_ITERATIONS inputs per format, seed $ORPO_FUZZ_SEED, failures -> $ORPO_FUZZ_FAILURES"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
rc=0
dotnet test --project test/Microsoft.ML.Orpo.Tests --report-trx --results-directory "$results" -- --filter "$filter" || rc=$?
# Per-format counts come from the tests' standard output, kept in the TRX report.
grep -ho 'fuzz [a-z0-9-]*: [0-9]* inputs[^&]*' "$results"/*.trx || true
echo "fuzz: seed $ORPO_FUZZ_SEED finished with exit code $rc"
exit "$rc"
