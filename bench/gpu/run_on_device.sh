#!/usr/bin/env bash
# One device run: GPU facts, offline nvcc build of the kernels (resource report), the PyTorch comparison,
# then the C# program (NVRTC build, verification against the CPU reference, benchmark). Run from the folder
# holding KvAdaQuant.GpuBench (self-contained linux-x64 publish), PackedKvAttention.cu and torch_baseline.py.
# Results go to $OUT (or ./out). Environment: TORCH=0 skips PyTorch, BENCH_ARGS are passed to the program
# (e.g. "--splits auto"), PTXAS_DEFS lists defines whose fast-kernel register report is added, SASS=1, PROFILE=1.
set -o pipefail
OUT=${OUT:-./out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
nvcc --version 2>&1 | tail -2
CUBIN=./PackedKvAttention.cubin
nvcc -cubin -arch=sm_90 -Xptxas -v -DHEAD_DIM=128 -o "$CUBIN" PackedKvAttention.cu > "$OUT/ptxas.txt" 2>&1
nvcc_rc=$?
echo "nvcc rc=$nvcc_rc"; grep -E "error|Compiling|Used|spill" "$OUT/ptxas.txt" | head -40
if [ $nvcc_rc -ne 0 ]; then head -60 "$OUT/ptxas.txt"; exit 2; fi
# PTXAS_DEFS="A=1 B=2": the fast kernel's resource report for each define built alone (variants).
for def in $PTXAS_DEFS; do
  echo "-D$def:" >> "$OUT/ptxas.txt"
  nvcc -cubin -arch=sm_90 -Xptxas -v -DHEAD_DIM=128 -D$def -o /tmp/variant.cubin PackedKvAttention.cu 2>&1 | grep -A2 "kvq_k4v2_fast" >> "$OUT/ptxas.txt"
done
find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | head -5
if [ -z "$KVAQ_NVRTC" ]; then
  KVAQ_NVRTC=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | grep -v alt | head -1); export KVAQ_NVRTC
fi
echo "KVAQ_NVRTC=$KVAQ_NVRTC"
if [ "${TORCH:-1}" = "1" ]; then
  PYTHONUNBUFFERED=1 timeout 240 python3 torch_baseline.py "$OUT/torch.json" 2>&1 | tee "$OUT/torch.log"
fi
chmod +x ./KvAdaQuant.GpuBench
timeout 300 ./KvAdaQuant.GpuBench "${1:-all}" --out "$OUT" --torch "$OUT/torch.json" $BENCH_ARGS 2>&1 | tee "$OUT/bench.log"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 1 ] && [ -f "$CUBIN" ]; then
  echo "NVRTC path failed (rc=$rc); retrying with the nvcc cubin"
  timeout 300 ./KvAdaQuant.GpuBench "${1:-all}" --out "$OUT" --torch "$OUT/torch.json" --cubin "$CUBIN" 2>&1 | tee "$OUT/bench_cubin.log"
fi
if [ "${SASS:-0}" = "1" ]; then
  cuobjdump -sass -fun kvq_k4v2_fast "$CUBIN" > "$OUT/sass.txt" 2>&1; echo "sass lines: $(wc -l < "$OUT/sass.txt")"
fi
if [ "${PROFILE:-0}" = "1" ]; then
  stalls=""
  for r in long_scoreboard short_scoreboard mio_throttle math_pipe_throttle wait barrier not_selected selected no_instruction dispatch_stall lg_throttle tex_throttle branch_resolving drain membar sleeping misc; do
    stalls="$stalls,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
  done
  timeout 200 ncu --clock-control none --target-processes all -k regex:kvq_k4v2_fast -s 1 -c 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --metrics "smsp__inst_executed.sum${stalls}" \
    ./KvAdaQuant.GpuBench profile --out /tmp/prof > "$OUT/ncu.txt" 2>&1
  echo "ncu rc=$?"; grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Stall|stalled|inst_executed|Warp Cycles|Issued|Eligible|Block Limit|Local|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|DRAM" "$OUT/ncu.txt" | head -80
fi
