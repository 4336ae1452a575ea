#!/usr/bin/env bash
# kvaq against itself: decode and prefill with the FP16 cache, with k4v2, and with k4v2 on the fastest attention path
# (--attn-int8-values), at ctx 128, 4,096 and 16,384, 2 threads, in the order A B C C B A so that a drift of the host's
# speed over the run reaches each cache alike. Each run prints its header (UTC time, load average) and the JSON
# "contexts" array. Usage: bench/kv_vs_fp16.sh [KVAQ] [MODEL] [CTX]   (README, "k4v2 against kvaq's own FP16 cache")
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
KVAQ=${1:-src/KvAdaQuant.Cli/bin/Release/net10.0/kvaq}
MODEL=${2:-/tmp/bench/l1b-q8_0.gguf}
CTX=${3:-128,4096,16384}
echo "# kvaq caches against each other, $(date -u '+%FT%TZ'); $(host_line)"
for kv in fp16 k4v2 int8v int8v k4v2 fp16; do
  case $kv in
    int8v) run --model "$MODEL" --kv k4v2 --attn-int8-values --ctx "$CTX" --threads 2 --runs 3 --decode-tokens 16 --json ;;
    *) run --model "$MODEL" --kv "$kv" --ctx "$CTX" --threads 2 --runs 3 --decode-tokens 16 --json ;;
  esac
done
