#!/usr/bin/env bash
# Speculative decoding with a draft model: plain decode, a draft model with the adaptive draft length (default
# --draft-p-min 0.75), the same with --draft-p-min 0, and --draft-fixed with 1 and 4 guesses (--draft-p-min 0), in the
# order A B C D E E D C B A, greedy. The drafts are Q4_0 copies of the targets' own weights (the only same-vocabulary
# pairs at hand): the 1B Q8_0 synthetic file (2 threads) drafted by its Q4_0 twin (same seed), and stories3M-q80 (1
# thread) drafted by `kvaq convert -m stories3M-q80 --type q4_0`. Prints one line per run: decode tok/s, guesses
# kept/drafted, and the tokens' SHA-1 (the same as plain decoding's in every run).
# Usage: bash bench/speculative-draft.sh [KVAQ] [L1B_GGUF] [L1B_DRAFT_GGUF] [STORIES3M] [STORIES3M_DRAFT_GGUF]
# (the drafts are written when missing: kvaq convert --synthetic llama-3.2-1b --type q4_0, kvaq convert -m STORIES3M --type q4_0)
set -euo pipefail
KVAQ=${1:-kvaq}
L1B=${2:-/tmp/bench/l1b-q8_0.gguf}
L1B_DRAFT=${3:-/tmp/bench/l1b-q4_0.gguf}
S3M=${4:-../shared/models/stories3M-q80/stories3M-q80.bin}
S3M_DRAFT=${5:-/tmp/bench/s3m-q4_0.gguf}
source "$(dirname "$0")/bench_lib.sh"
[ -f "$L1B_DRAFT" ] || "$KVAQ" convert --synthetic llama-3.2-1b --type q4_0 --out "$L1B_DRAFT" >/dev/null
[ -f "$S3M_DRAFT" ] || "$KVAQ" convert -m "$S3M" --type q4_0 --out "$S3M_DRAFT" >/dev/null
echo "# $(host_line)"
suite() { # model draft prompt n threads ctx
  local m=$1 d=$2 p=$3 n=$4 t=$5 c=$6
  echo "## $m drafted by $d, -n $n -t $t --ctx $c ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  local base=(-m "$m" -p "$p" -n "$n" -t "$t" --ctx "$c")
  for order in "plain adaptive adaptive-p0 fixed1 fixed4" "fixed4 fixed1 adaptive-p0 adaptive plain"; do
    for v in $order; do
      case $v in
        plain) generate_line plain "${base[@]}" ;;
        adaptive) generate_line adaptive "${base[@]}" --model-draft "$d" ;;
        adaptive-p0) generate_line adaptive-p0 "${base[@]}" --model-draft "$d" --draft-p-min 0 ;;
        fixed1) generate_line fixed-1 "${base[@]}" --model-draft "$d" --draft-p-min 0 --draft-fixed --draft-max 1 ;;
        fixed4) generate_line fixed-4 "${base[@]}" --model-draft "$d" --draft-p-min 0 --draft-fixed --draft-max 4 ;;
      esac
    done
  done
}
suite "$L1B" "$L1B_DRAFT" "The quick brown fox jumps over the lazy dog. The quick brown fox" 128 2 512
suite "$S3M" "$S3M_DRAFT" "Lily and Ben went to the park. Lily and Ben played on the swing. Then Lily and Ben" 400 1 512
