#!/usr/bin/env bash
# kvaq serve, one /v1/completions request in lm-evaluation-harness's log-likelihood shape: a batch of 8 prompts
# (300-character WikiText-2 pieces), echo, logprobs 1, max_tokens 0; 1B-shape Q8_0, k4v2, 2 threads; --parallel 1
# then 4, two alternated rounds; wall time of the request (curl's time_total).
K=src/KvAdaQuant.Cli/bin/Release/net10.0/kvaq
python3 - > /tmp/loglik.json <<'PY'
import json
text = open("../shared/data/wikitext-2/wiki.test.raw", encoding="utf-8").read()
print(json.dumps({"prompt": [text[i * 300:(i + 1) * 300] for i in range(8)], "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}))
PY
for round in 1 2; do for np in 1 4; do
  $K serve -m /tmp/bench/l1b-q8_0.gguf --kv k4v2 --ctx 512 --threads 2 --parallel $np --port 18098 > /tmp/loglik.out 2> /tmp/loglik.err &
  pid=$!; until grep -q listening /tmp/loglik.out 2>/dev/null; do sleep 0.5; done
  t=$(curl -s -o /tmp/loglik.res -w '%{time_total}' localhost:18098/v1/completions -d @/tmp/loglik.json)
  echo "round $round --parallel $np: $t s, $(python3 -c "import json; d=json.load(open('/tmp/loglik.res')); print(len(d['choices']), 'choices,', d['usage'])")"
  kill $pid; wait $pid 2>/dev/null
done; done
