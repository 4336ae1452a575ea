#!/usr/bin/env bash
# Builds what the GPU machine needs (it has no .NET): the self-contained GPU test runner with kvaq's own publish folder
# merged in (so one folder holds KvAdaQuant.GpuTestRunner and kvaq), without the files the GPU runs never load (the
# LLamaSharp natives under runtimes/, SkiaSharp/HarfBuzz, the debugger shims), packed with xz to fit the device's 64 MiB
# carry limit (~39 MB). Usage: bash bench/gpu/pack_runner.sh [OUT_TAR] (default gpu-carry/runner.tar.xz, a folder git
# should ignore: add gpu-carry/ to .git/info/exclude), then on the GPU machine:
#   mkdir -p /tmp/r && tar xJf gpu-carry/runner.tar.xz -C /tmp/r
#   OUT=$OUT bash bench/gpu/run_gpu_tests.sh /tmp/r/runner FIXTURES 0         # the GPU tests
#   OUT=$OUT SINGLE_RUNS=0 bash bench/gpu/run_prefill.sh /tmp/r/runner/kvaq 1b  # prefill speed
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAR=$(realpath -m "${1:-$ROOT/gpu-carry/runner.tar.xz}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
dotnet publish "$ROOT/tests/KvAdaQuant.GpuTestRunner" -c Release -r linux-x64 --self-contained -o "$W/runner" > "$W/runner.log" 2>&1 || { tail -20 "$W/runner.log"; exit 1; }
dotnet publish "$ROOT/src/KvAdaQuant.Cli" -c Release -r linux-x64 --self-contained -o "$W/kvaq" > "$W/kvaq.log" 2>&1 || { tail -20 "$W/kvaq.log"; exit 1; }
cp -rn "$W/kvaq/." "$W/runner/"
rm -rf "$W/runner/runtimes" "$W/runner/libSkiaSharp.so" "$W/runner/libHarfBuzzSharp.so" "$W/runner/libmscordaccore.so" "$W/runner/libmscordbi.so" "$W/runner/createdump"
mkdir -p "$(dirname "$TAR")"
tar cJf "$TAR" -C "$W" runner
ls -la "$TAR"
