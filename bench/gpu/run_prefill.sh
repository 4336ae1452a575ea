#!/usr/bin/env bash
# GPU prefill speed, chunked (--ubatch 32 and kvaq's default 256) against position by position (--ubatch 1), on a synthetic GGUF file
# written on the GPU machine. Usage: bash bench/gpu/run_prefill.sh KVAQ [MODELS] (MODELS: 1b, 8b or 1b,8b; default 1b)
#   KVAQ: a self-contained kvaq (dotnet publish src/KvAdaQuant.Cli -c Release -r linux-x64 --self-contained)
# SINGLE_RUNS (default 3): timed prefills of the position-by-position runs (one takes ~27 s on the 8B file); 0 skips them.
# GEMMS (default "fma tensor-cores"): the chunked runs' --prefill-gemm values, each run in turn.
# CHUNKS (default "32 256"): the chunked 4,096-token runs' --ubatch values (the 32,768-token run takes kvaq's default).
# ATTNS (default "auto"): the chunked runs' --prefill-attention values (tensor-cores, fma, auto), each run in turn.
# Logs in $OUT (or ./out): prefill.log (each bench's command and per-run speeds), prefill.jsonl (its --json, one line per bench).
set -u -o pipefail
K=$1
MODELS=${2:-1b}
SINGLE_RUNS=${SINGLE_RUNS:-3}
GEMMS=${GEMMS:-fma tensor-cores}
CHUNKS=${CHUNKS:-32 256}
ATTNS=${ATTNS:-auto}
OUT=${OUT:-./out}
W=${WORK:-/tmp/kvaq-prefill}
mkdir -p "$OUT" "$W"
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
run() {
  echo "== kvaq bench $*" | tee -a "$OUT/prefill.log"
  timeout 300 "$K" bench "$@" --json 2>> "$OUT/prefill.log" | tr -d '\n' >> "$OUT/prefill.jsonl"
  echo >> "$OUT/prefill.jsonl"
  tail -1 "$OUT/prefill.log"
}
for m in ${MODELS//,/ }; do
  case $m in
    1b) preset=llama-3.2-1b ;;
    8b) preset=llama-3.1-8b ;;
    *) echo "unknown model $m"; exit 2 ;;
  esac
  f="$W/$m-q8_0.gguf"
  [ -f "$f" ] || timeout 300 "$K" convert --synthetic $preset --type q8_0 --out "$f" > /dev/null 2>> "$OUT/prefill.log"
  for kv in fp16 k4v2; do
    [ "$SINGLE_RUNS" = 0 ] || run --device cuda -m "$f" --kv $kv --ctx 4096 --decode-tokens 16 --runs 1 --prefill-runs "$SINGLE_RUNS" --ubatch 1
    for ub in $CHUNKS; do
      for g in $GEMMS; do
        for a in $ATTNS; do
          run --device cuda -m "$f" --kv $kv --ctx 4096 --decode-tokens 16 --runs 1 --prefill-runs 3 --ubatch $ub --prefill-gemm $g --prefill-attention $a
        done
      done
    done
  done
  for g in $GEMMS; do
    for a in $ATTNS; do
      run --device cuda -m "$f" --kv k4v2 --ctx 32768 --prefill-tokens 32768 --decode-tokens 16 --runs 1 --prefill-runs 1 --prefill-gemm $g --prefill-attention $a
    done
  done
done
