# Shared by the bench scripts (sourced, not run): the host line of a log's header and `run`, which prints a header
# (UTC time, load average) and the JSON "contexts" array of one `kvaq bench` command. Needs KVAQ set.
host_line() {
  echo "$(lscpu | grep 'Model name' | sed 's/  */ /g'), family $(lscpu | awk -F: '/CPU family/{gsub(/ /,"",$2);print $2}') model $(lscpu | awk -F: '/^Model:/{gsub(/ /,"",$2);print $2}'); avx_vnni: $(grep -qw avx_vnni /proc/cpuinfo && echo yes || echo no); $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
}
run() {
  echo "## kvaq bench $* ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$KVAQ" bench "$@" | tr -d '\n' | grep -o '"contexts": \[.*\]' | sed 's/  */ /g'
  echo
}
