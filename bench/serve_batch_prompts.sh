#!/usr/bin/env bash
# kvaq serve, one /v1/completions request holding a batch of 4 prompts (greedy, 24 tokens each), 1B-shape Q8_0, k4v2, 2 threads;
# --parallel 1 then 4, two alternated rounds; wall time of the request (curl's time_total).
K=src/KvAdaQuant.Cli/bin/Release/net10.0/kvaq
for round in 1 2; do for np in 1 4; do
  $K serve -m /tmp/bench/l1b-q8_0.gguf --kv k4v2 --ctx 256 --threads 2 --parallel $np --port 18095 > /tmp/bb.out 2> /tmp/bb.err &
  pid=$!; until grep -q listening /tmp/bb.out 2>/dev/null; do sleep 0.5; done
  t=$(curl -s -o /tmp/bb.json -w '%{time_total}' localhost:18095/v1/completions -d '{"prompt": ["Once upon a time", "The little dog ran", "One day a girl", "In a small town"], "max_tokens": 24, "temperature": 0}')
  echo "round $round --parallel $np: $t s, $(python3 -c "import json; d=json.load(open('/tmp/bb.json')); print(len(d['choices']), 'choices,', d['usage'])")"
  kill $pid; wait $pid 2>/dev/null
done; done
