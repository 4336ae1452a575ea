#!/usr/bin/env bash
# Alternates two kvaq builds (A, then B) on the decode-attention and weight kernels that a CPU without AVX-VNNI
# (AMD Zen 4, Intel Ice Lake / Skylake-X) runs differently: the issue-6 attention command at 32k (k4v2,
# --attn-int8-values, 2 threads) and prefill + decode at ctx 128 on the synthetic 1B Q8_0 file.
# Usage: bench/no_avx_vnni_ab.sh KVAQ_A KVAQ_B [MODEL] [ROUNDS]
set -euo pipefail
A=${1:?kvaq binary A}
B=${2:?kvaq binary B}
MODEL=${3:-/tmp/bench/l1b-q8_0.gguf}
ROUNDS=${4:-2}
echo "# $(date -u '+%F %T') UTC; $(lscpu | grep 'Model name' | sed 's/  */ /g'); family $(lscpu | awk -F: '/CPU family/{gsub(/ /,"",$2);print $2}') model $(lscpu | awk -F: '/^Model:/{gsub(/ /,"",$2);print $2}')"
echo "# avx_vnni in /proc/cpuinfo: $(grep -qw avx_vnni /proc/cpuinfo && echo yes || echo no); avx512_vnni: $(grep -qw avx512_vnni /proc/cpuinfo && echo yes || echo no)"
echo "# A = $A"
echo "# B = $B"
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A
    [ "$side" = B ] && bin=$B
    echo "## round $round $side: attention, k4v2, 32k, --attn-int8-values, 2 threads (load $(cut -d' ' -f1 /proc/loadavg))"
    "$bin" bench --attention --shape llama-3.2-1b --kv k4v2 --ctx 32768 --threads 2 --attn-int8-values --json \
      | grep -E '"attention.(step_seconds|min_step_seconds|gb_per_second|triad_share)"|"triad.gb_per_second"'
  done
  for side in A B; do
    bin=$A
    [ "$side" = B ] && bin=$B
    echo "## round $round $side: $MODEL, fp16 cache, ctx 128, 2 threads (load $(cut -d' ' -f1 /proc/loadavg))"
    "$bin" bench --model "$MODEL" --kv fp16 --ctx 128 --threads 2 --runs 3 --decode-tokens 16 2>&1 | tail -2
  done
done
