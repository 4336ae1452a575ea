#!/usr/bin/env python3
"""Load generator for `kvaq serve` (or any OpenAI-compatible /v1/completions server).

Sends N greedy streaming completions at once (or one every --stagger seconds), each with its own prompt of token ids,
and prints per request the time to the first streamed token, to the last, and the longest wait between two streamed tokens, and
over all of them the generated tokens per second of wall time (first request sent to last answer finished) and the
median / p99 / longest wait between streamed tokens. Standard library only.

    python3 bench/serve_load.py http://127.0.0.1:PORT --requests 4 --prompt-tokens 192 --max-tokens 32
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def one(url, prompt, max_tokens, result, t0):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True})
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        result["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
        return
    first = None
    chunks = 0
    gaps = []
    last = None
    for raw in resp:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if event.get("usage"):
            result["tokens"] = event["usage"]["completion_tokens"]
        if any(c.get("text") for c in event.get("choices", [])):
            now = time.perf_counter()
            chunks += 1
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    done = time.perf_counter()
    result.update(sent=sent - t0, first=(first - sent) if first else None, total=done - sent, done=done - t0, chunks=chunks, gaps=gaps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=192, help="prompt length: BOS (1) and random token ids")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stagger", type=float, default=0.0, help="seconds between requests (0: all at once)")
    ap.add_argument("--vocab", type=int, default=32000, help="token ids are drawn from [3, vocab)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    prompts = [[1] + [rng.randrange(3, a.vocab) for _ in range(a.prompt_tokens - 1)] for _ in range(a.requests)]
    results = [dict() for _ in prompts]
    t0 = time.perf_counter()
    threads = []
    for i, p in enumerate(prompts):
        if i and a.stagger:
            time.sleep(a.stagger)
        t = threading.Thread(target=one, args=(a.url, p, a.max_tokens, results[i], t0))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    end = max((r.get("done", 0) for r in results), default=0)
    bad = [r["error"] for r in results if "error" in r]
    if bad:
        print("errors:", bad, file=sys.stderr)
        sys.exit(1)
    for i, r in enumerate(results):
        first = f"{r['first']:.2f}" if r["first"] is not None else "-"
        gap = f", longest wait between streamed tokens {max(r['gaps']):.2f} s" if r["gaps"] else ""
        print(f"request {i}: sent at {r['sent']:.2f} s, first token after {first} s, done after {r['total']:.2f} s, {r.get('tokens', 0)} tokens{gap}")
    firsts = sorted(r["first"] for r in results if r["first"] is not None)
    gaps = sorted(g for r in results for g in r["gaps"])
    tokens = sum(r.get("tokens", 0) for r in results)
    print(f"{a.requests} requests x ({a.prompt_tokens} prompt + up to {a.max_tokens} generated tokens), stagger {a.stagger} s: "
          f"wall {end:.2f} s, {tokens / end:.2f} generated tok/s, {(tokens + a.requests * a.prompt_tokens) / end:.2f} prompt+generated tok/s, "
          f"first token median {firsts[len(firsts) // 2]:.2f} s, max {firsts[-1]:.2f} s"
          + (f"; between streamed tokens median {gaps[len(gaps) // 2] * 1000:.0f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms" if gaps else ""))


if __name__ == "__main__":
    main()
