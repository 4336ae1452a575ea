#!/usr/bin/env bash
# Re-runs the issue-6 targets' commands (README, "Performance targets (issue 6)") one after another, each with a
# header (UTC time, load average). Usage: bench/targets_recheck.sh [KVAQ] [MODEL] [--skip-16k]
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
KVAQ=${1:-src/KvAdaQuant.Cli/bin/Release/net10.0/kvaq}
MODEL=${2:-/tmp/bench/l1b-q8_0.gguf}
SKIP16=${3:-}
echo "# issue-6 targets, $(date -u '+%FT%TZ'); $(host_line)"
run --model "$MODEL" --kv fp16 --ctx 128 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --json
run --model "$MODEL" --kv k4v2 --ctx 4096 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --vs-cache f16 --json
run --model "$MODEL" --kv k4v2 --ctx 4096 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --vs-cache q4_0 --json
if [ "$SKIP16" != "--skip-16k" ]; then
  run --model "$MODEL" --kv k4v2 --ctx 16384 --threads 2 --runs 3 --decode-tokens 8 --vs llama.cpp --vs-cache f16 --json
fi
run --attention --shape llama-3.2-1b --kv k4v2 --ctx 32768 --threads 2 --attn-int8-values --json
run --attention --shape llama-3.2-1b --kv k4v2 --ctx 32768 --threads 1 --attn-int8-values --json
