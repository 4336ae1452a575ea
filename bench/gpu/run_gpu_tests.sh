#!/usr/bin/env bash
# The xunit GPU tests (tests/KvAdaQuant.Tests/Gpu) on a machine with an NVIDIA GPU and no .NET, through the
# self-contained KvAdaQuant.GpuTestRunner. Usage: bash bench/gpu/run_gpu_tests.sh RUNNER FIXTURES [SANITIZE]
#   RUNNER: the runner's publish folder, or a .tar.gz of it (one top folder holding KvAdaQuant.GpuTestRunner)
#   FIXTURES: a folder laid out like ../shared, holding at least models/stories260K/{stories260K.bin,tok512.bin}
#   SANITIZE: 1 (default) also runs the CUDA tests once more under compute-sanitizer (memcheck)
# Logs in $OUT (or ./out): gpu.txt, tests.log (all Gpu tests, xunit's default parallelism), serial.log (the CUDA
# tests one at a time), sanitizer.log. Exit code: the first run's (0 = no test failed).
set -u -o pipefail
RUNNER=$1
FIXTURES=$(cd "$2" && pwd)
SANITIZE=${3:-1}
OUT=${OUT:-./out}
mkdir -p "$OUT"
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 KVAQ_FIXTURES="$FIXTURES"
if [ -f "$RUNNER" ]; then
  DIR=$(mktemp -d)
  tar xzf "$RUNNER" -C "$DIR" || exit 2
  RUNNER=$(dirname "$(find "$DIR" -name KvAdaQuant.GpuTestRunner -type f | head -1)")
fi
BIN="$RUNNER/KvAdaQuant.GpuTestRunner"
chmod +x "$BIN"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -2
  ldconfig -p | grep -E 'libcuda\.so|libnvrtc\.so'; ls /usr/local/cuda/lib64/libnvrtc* 2>&1; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
echo "== all Gpu tests (KVAQ_NVRTC=${KVAQ_NVRTC:-unset})"
timeout 300 "$BIN" 2>&1 | tee "$OUT/tests.log"
rc=$?
echo "== CUDA tests, serial"
timeout 200 "$BIN" --filter CudaDecoderTests --filter CudaPackedKvAttentionTests --serial 2>&1 | tee "$OUT/serial.log"
if [ "$SANITIZE" = "1" ] && command -v compute-sanitizer > /dev/null; then
  echo "== CUDA tests under compute-sanitizer memcheck"
  timeout 300 compute-sanitizer --tool memcheck --print-limit 20 "$BIN" --filter CudaDecoderTests --filter CudaPackedKvAttentionTests --serial > "$OUT/sanitizer.log" 2>&1
  echo "compute-sanitizer rc=$?"; grep -E '^(PASS|FAIL|SKIP|total)|ERROR SUMMARY|=========' "$OUT/sanitizer.log" | head -60
fi
exit $rc
