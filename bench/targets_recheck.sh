#!/usr/bin/env bash
# Re-runs the issue-6 targets' commands (README, "Performance targets (issue 6)") one after another, each with a
# header (UTC time, load average). Usage: bench/targets_recheck.sh [KVAQ] [MODEL] [--skip-16k]
set -euo pipefail
KVAQ=${1:-src/KvAdaQuant.Cli/bin/Release/net10.0/kvaq}
MODEL=${2:-/tmp/bench/l1b-q8_0.gguf}
SKIP16=${3:-}
echo "# issue-6 targets, $(date -u '+%FT%TZ'); $(lscpu | grep 'Model name' | sed 's/  */ /g'), family $(lscpu | awk -F: '/CPU family/{gsub(/ /,"",$2);print $2}') model $(lscpu | awk -F: '/^Model:/{gsub(/ /,"",$2);print $2}'); avx_vnni: $(grep -qw avx_vnni /proc/cpuinfo && echo yes || echo no); $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
run() {
  echo "## kvaq bench $* ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$KVAQ" bench "$@" | tr -d '\n' | grep -o '"contexts": \[.*\]' | sed 's/  */ /g'
  echo
}
run --model "$MODEL" --kv fp16 --ctx 128 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --json
run --model "$MODEL" --kv k4v2 --ctx 4096 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --vs-cache f16 --json
run --model "$MODEL" --kv k4v2 --ctx 4096 --threads 2 --runs 3 --decode-tokens 16 --vs llama.cpp --vs-cache q4_0 --json
if [ "$SKIP16" != "--skip-16k" ]; then
  run --model "$MODEL" --kv k4v2 --ctx 16384 --threads 2 --runs 3 --decode-tokens 8 --vs llama.cpp --vs-cache f16 --json
fi
run --attention --shape llama-3.2-1b --kv k4v2 --ctx 32768 --threads 2 --attn-int8-values --json
run --attention --shape llama-3.2-1b --kv k4v2 --ctx 32768 --threads 1 --attn-int8-values --json
