#!/usr/bin/env bash
# The GPU decode path (kvaq --device cuda) on a machine with an NVIDIA GPU and no .NET: verification against the
# CPU engine, then decode speed and capacity on synthetic Llama 3.2 1B / 3.1 8B GGUF files written on that machine.
# Usage: bash bench/gpu/run_decode.sh [KVAQ] [MODELS_DIR] [STAGES]   results in $OUT (or ./out)
#   KVAQ: the self-contained kvaq (dotnet publish src/KvAdaQuant.Cli -r linux-x64 --self-contained -p:PublishSingleFile=true)
#   MODELS_DIR: holds stories260K.bin + tok512.bin and stories3M-q80.bin + tok4096.bin
#   STAGES: any of verify,1b,8b,fit (default all)
set -u
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=${DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:-1}
K=${1:-.gpu/kvaq}
M=${2:-.gpu/models}
STAGES=${3:-verify,1b,8b,fit}
OUT=${OUT:-./out}
W=${WORK:-/tmp/kvaq-models}
mkdir -p "$OUT" "$W"
chmod +x "$K"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/run.log"; }
has() { [[ ",$STAGES," == *",$1,"* ]]; }
# At most a few files come back from the device: run.log, verify.md, bench.txt, fit.txt, misc.txt.
MISC="$OUT/misc.txt"; BENCH="$OUT/bench.txt"; FIT="$OUT/fit.txt"; VERIFY="$OUT/verify.md"
nvidia-smi >> "$MISC" 2>&1

if has verify; then
  log "smoke: verify-decode stories260K fp16"
  timeout 150 "$K" verify-decode --model "$M/stories260K.bin" --synthetic "" --kv fp16 --steps 128 --greedy 32 >> "$VERIFY" 2>> "$MISC"
  rc=$?; log "smoke rc=$rc"
  if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then tail -30 "$MISC"; exit 1; fi
  log "verify-decode: stories260K, stories3M-q80, synthetic tiny models"
  timeout ${VERIFY_TIMEOUT:-240} "$K" verify-decode --model "$M/stories260K.bin" --model "$M/stories3M-q80.bin" >> "$VERIFY" 2>> "$MISC"
  log "verify rc=$?"
fi

bench() {  # model-file tag kv batch ctxs
  log "bench $2 --kv $3 --batch $4 --ctx $5"
  echo "=== $2 --kv $3 --batch $4 --ctx $5" >> "$BENCH"
  timeout 120 "$K" bench -m "$1" --device cuda --kv "$3" --batch "$4" --ctx "$5" --decode-tokens 32 --runs 3 >> "$BENCH" 2>> "$MISC"
  log "rc=$?"
}

if has 1b; then
  for t in q8_0 f16; do
    [ -f "$W/l1b-$t.gguf" ] || timeout 120 "$K" convert --synthetic llama-3.2-1b --type $t --out "$W/l1b-$t.gguf" >> "$MISC" 2>&1
    log "converted 1b $t rc=$?"
  done
  log "generate 1b q8_0"
  timeout 60 "$K" generate -m "$W/l1b-q8_0.gguf" --device cuda --ctx 4096 -n 48 -p "Once upon a time" >> "$MISC" 2>&1
  for t in q8_0 f16; do
    for kv in fp16 k4v2; do bench "$W/l1b-$t.gguf" 1b-$t $kv 1 4096,32768; done
  done
  for kv in fp16 k4v2; do bench "$W/l1b-q8_0.gguf" 1b-q8_0 $kv 8 4096,32768; done
fi

if has 8b; then
  [ -f "$W/l8b-q8_0.gguf" ] || timeout 200 "$K" convert --synthetic llama-3.1-8b --type q8_0 --out "$W/l8b-q8_0.gguf" >> "$MISC" 2>&1
  log "converted 8b q8_0 rc=$?"
  for kv in fp16 k4v2; do bench "$W/l8b-q8_0.gguf" 8b-q8_0 $kv 1 4096,32768; done
  for kv in fp16 k4v2; do bench "$W/l8b-q8_0.gguf" 8b-q8_0 $kv 8 4096,32768; done
  [ -f "$W/l8b-f16.gguf" ] || timeout 200 "$K" convert --synthetic llama-3.1-8b --type f16 --out "$W/l8b-f16.gguf" >> "$MISC" 2>&1
  log "converted 8b f16 rc=$?"
  for kv in fp16 k4v2; do bench "$W/l8b-f16.gguf" 8b-f16 $kv 1 4096,32768; done
fi

if has fit; then
  for m in l1b-q8_0 l8b-q8_0; do
    for kv in fp16 k4v2; do
      [ -f "$W/$m.gguf" ] || continue
      log "fit $m $kv"
      echo "=== $m --kv $kv" >> "$FIT"
      timeout 120 "$K" bench -m "$W/$m.gguf" --device cuda --kv $kv --fit --ctx 4096,32768,131072 >> "$FIT" 2>> "$MISC"
      log "rc=$?"
    done
  done
fi
log done
