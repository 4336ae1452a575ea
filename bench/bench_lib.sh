# Shared by the bench scripts (sourced, not run): the host line of a log's header, `run`, which prints a header
# (UTC time, load average) and the JSON "contexts" array of one `kvaq bench` command, and `generate_line`. Needs KVAQ set.
host_line() {
  echo "$(lscpu | grep 'Model name' | sed 's/  */ /g'), family $(lscpu | awk -F: '/CPU family/{gsub(/ /,"",$2);print $2}') model $(lscpu | awk -F: '/^Model:/{gsub(/ /,"",$2);print $2}'); avx_vnni: $(grep -qw avx_vnni /proc/cpuinfo && echo yes || echo no); $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
}
run() {
  echo "## kvaq bench $* ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$KVAQ" bench "$@" | tr -d '\n' | grep -o '"contexts": \[.*\]' | sed 's/  */ /g'
  echo
}
# One greedy `kvaq generate --json` run as one line: decode tok/s, guesses kept/drafted, batches, and the tokens' SHA-1
# (speculative.sh, speculative-draft.sh). Usage: generate_line LABEL ARGS...
generate_line() {
  local label=$1; shift
  local out; out=$("$KVAQ" generate "$@" --temperature 0 --json)
  LABEL=$label python3 -c '
import hashlib, json, os, sys
j = json.loads(sys.stdin.read()); s = j.get("speculative") or {}
sha = hashlib.sha1(str(j["tokens"]).encode()).hexdigest()[:10]
print("%-12s decode %8.2f tok/s  kept %4d of %4d guesses  batches %4d  tokens %d  sha1 %s" % (os.environ["LABEL"],
      j["decode_tokens_per_second"], s.get("accepted", 0), s.get("drafted", 0), s.get("batches", 0), len(j["tokens"]), sha))
' <<<"$out"
}
