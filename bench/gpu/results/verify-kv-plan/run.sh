# kvaq verify-decode with --kv-plan files, as run on the H200 (the files here are its output). In a folder holding kvaq (self-contained, see
# the README's GPU commands), stories260K.bin + tok512.bin, stories3M-q80.bin + tok4096.bin and these plans: OUT=dir bash run.sh
set -u
cd "$(dirname "$0")"
K=${KVAQ:-./kvaq}
nvidia-smi -L
$K verify-decode --model stories260K.bin --synthetic '' --kv fp16,k4v2 --kv-plan mixed5.json,k4v2x5.json,fp16x5.json --out $OUT/v260k.md > /dev/null; echo "rc=$?"
$K verify-decode --model stories3M-q80.bin --synthetic '' --kv k4v2 --kv-plan mixed6.json,k4v2x6.json --out $OUT/v3m.md > /dev/null; echo "rc=$?"
$K verify-decode --synthetic tiny-llama-hd128,tiny-llama-hd64 --types f16,q8_0 --kv k4v2 --kv-plan k4v2x2.json,mixed2.json --out $OUT/vsyn.md > /dev/null; echo "rc=$?"
$K verify-decode --model stories260K.bin --kv-plan mixed5.json; echo "rc=$? (expected 1: layer count vs the synthetic presets)"
