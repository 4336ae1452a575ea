#!/usr/bin/env bash
# Slot save / erase / restore on kvaq serve against re-running the prompt: one server per KV spec, a prompt of about
# N tokens (2N characters of WikiText-2), one generated token; then the slot saved, erased, restored, and the prompt plus one word
# sent again (all but its last tokens from the restored cache). Usage: bench/serve_slot_files.sh KVAQ MODEL N SPEC...
set -euo pipefail
kvaq=$1; model=$2; n=$3; shift 3
dir=$(mktemp -d)
python3 - "$n" > "$dir/prompt.json" <<'PY'
import json, sys
n = int(sys.argv[1])
text = open("../shared/data/wikitext-2/wiki.test.raw", encoding="utf-8").read()[:n * 2]
print(json.dumps({"prompt": text, "max_tokens": 1, "temperature": 0}))
PY
python3 -c "import json,sys; d=json.load(open('$dir/prompt.json')); d['prompt'] += ' and'; print(json.dumps(d))" > "$dir/longer.json"
for spec in "$@"; do
  "$kvaq" serve -m "$model" --kv "$spec" --ctx $((n * 3)) --threads 2 --port 18090 --slot-save-path "$dir/slots" > "$dir/out" 2> "$dir/err" &
  pid=$!
  until grep -q listening "$dir/out" 2>/dev/null; do sleep 0.5; done
  u=http://127.0.0.1:18090
  t0=$(date +%s.%N); r1=$(curl -s $u/v1/completions -d @"$dir/prompt.json"); t1=$(date +%s.%N)
  save=$(curl -s -XPOST "$u/slots/0?action=save" -d '{"filename":"s.bin"}')
  erase=$(curl -s -XPOST "$u/slots/0?action=erase")
  restore=$(curl -s -XPOST "$u/slots/0?action=restore" -d '{"filename":"s.bin"}')
  t2=$(date +%s.%N); r2=$(curl -s $u/v1/completions -d @"$dir/longer.json"); t3=$(date +%s.%N)
  python3 - "$spec" "$r1" "$save" "$restore" "$r2" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys
spec, r1, save, restore, r2 = sys.argv[1], *map(json.loads, sys.argv[2:6])
t0, t1, t2, t3 = map(float, sys.argv[6:10])
print(f"{spec}: prompt {r1['usage']['prompt_tokens']} tokens run in {t1 - t0:.2f} s (prefill {r1['kvaq']['prefill_tokens_per_second']:.1f} tok/s), "
      f"KV {r1['kvaq']['kv_bytes']:,} B; save {save['n_saved']} tokens, {save['n_written']:,} B in {save['timings']['save_ms']:.1f} ms; "
      f"restore {restore['n_restored']} tokens in {restore['timings']['restore_ms']:.1f} ms; "
      f"then prompt {r2['usage']['prompt_tokens']} tokens ({r2['kvaq']['cached_tokens']} from the cache) in {t3 - t2:.2f} s")
PY
  kill $pid; wait $pid 2>/dev/null || true
done
rm -rf "$dir"
