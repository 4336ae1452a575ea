#!/usr/bin/env bash
# Speculative decoding end to end: plain decode, prompt lookup with the adaptive draft length, and fixed drafts of 1 and
# 8 guesses, in the order A B C D D C B A (twice each), greedy, on the 1B Q8_0 file (2 threads) and stories3M-q80
# (1 thread). Prints one line per run: decode tok/s, guesses kept/drafted, and whether the tokens equal plain decoding's.
# Usage: bash bench/speculative.sh [KVAQ] [L1B_GGUF] [STORIES3M]
set -euo pipefail
KVAQ=${1:-kvaq}
L1B=${2:-/tmp/bench/l1b-q8_0.gguf}
S3M=${3:-../shared/models/stories3M-q80/stories3M-q80.bin}
source "$(dirname "$0")/bench_lib.sh"
echo "# $(host_line)"
suite() { # model prompt n threads ctx
  local m=$1 p=$2 n=$3 t=$4 c=$5
  echo "## $m, -n $n -t $t --ctx $c ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  local base=(-m "$m" -p "$p" -n "$n" -t "$t" --ctx "$c")
  for order in "plain adaptive fixed1 fixed8" "fixed8 fixed1 adaptive plain"; do
    for v in $order; do
      case $v in
        plain) generate_line plain "${base[@]}" ;;
        adaptive) generate_line adaptive "${base[@]}" --lookup-ngram 3 ;;
        fixed1) generate_line fixed-1 "${base[@]}" --lookup-ngram 3 --draft-fixed --draft-max 1 ;;
        fixed8) generate_line fixed-8 "${base[@]}" --lookup-ngram 3 --draft-fixed --draft-max 8 ;;
      esac
    done
  done
}
suite "$L1B" "The quick brown fox jumps over the lazy dog. The quick brown fox" 128 2 512
suite "$S3M" "Lily and Ben went to the park. Lily and Ben played on the swing. Then Lily and Ben" 400 1 512
