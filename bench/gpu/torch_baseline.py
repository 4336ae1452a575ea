"""PyTorch comparison for the KvAdaQuant GPU attention benchmark (not a dependency of the library).

Measures, on the same GPU and in the same session as `KvAdaQuant.GpuBench bench`:
  - device-to-device copy bandwidth (bytes read + written over time),
  - PyTorch SDPA decode attention on an FP16 cache (32 query heads, 8 KV heads, head dim 128, enable_gqa),
  - dequantize-then-SDPA: the whole K4V2 cache (per-token groups of 64, FP16 scale and min, same packed
    layout as ours, plus an FP16 residual window of 64) unpacked to FP16 with torch ops, then SDPA.
Median of CUDA-event-timed launches. Writes JSON to the path given as the first argument.
"""
import json
import sys

import torch
import torch.nn.functional as F

SHAPES = [(8, 32768), (1, 32768), (1, 131072), (16, 8192)]
HQ, HKV, D, R, G = 32, 8, 128, 64, 64


def median_us(fn, iters, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return times[len(times) // 2] * 1000.0


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "torch_baseline.json"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shapes": []}

    n = 1 << 31
    x = torch.empty(n, dtype=torch.uint8, device=dev).random_(0, 255)
    y = torch.empty_like(x)
    t = median_us(lambda: y.copy_(x), 20)
    res["copy_gbps"] = 2 * n / (t * 1e-6) / 1e9
    del x, y

    for b, npos in SHAPES:
        q = torch.randn(b, HQ, 1, D, dtype=torch.float16, device=dev)
        k = torch.randn(b, HKV, npos, D, dtype=torch.float16, device=dev)
        v = torch.randn(b, HKV, npos, D, dtype=torch.float16, device=dev)
        t_sdpa = median_us(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 100)
        fp16_bytes = 2 * k.numel() * 2
        del k, v

        t_q = npos - R
        kc = torch.randint(0, 256, (b, HKV, t_q, D // 2), dtype=torch.uint8, device=dev)
        vc = torch.randint(0, 256, (b, HKV, t_q, D // 4), dtype=torch.uint8, device=dev)
        ks = (torch.rand(b, HKV, t_q, D // G, 1, device=dev) * 0.08 + 0.02).half()
        km = (torch.rand(b, HKV, t_q, D // G, 1, device=dev) * 0.5 - 1.0).half()
        vs = (torch.rand(b, HKV, t_q, D // G, 1, device=dev) * 0.08 + 0.02).half()
        vm = (torch.rand(b, HKV, t_q, D // G, 1, device=dev) * 0.5 - 1.0).half()
        kr = torch.randn(b, HKV, R, D, dtype=torch.float16, device=dev)
        vr = torch.randn(b, HKV, R, D, dtype=torch.float16, device=dev)

        def dequant_sdpa():
            kq = torch.stack((kc & 15, kc >> 4), -1).view(b, HKV, t_q, D // G, G).half()
            vq = torch.stack((vc & 3, (vc >> 2) & 3, (vc >> 4) & 3, vc >> 6), -1).view(b, HKV, t_q, D // G, G).half()
            kk = torch.cat(((kq * ks + km).view(b, HKV, t_q, D), kr), 2)
            vv = torch.cat(((vq * vs + vm).view(b, HKV, t_q, D), vr), 2)
            return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

        t_deq = median_us(dequant_sdpa, 20, warmup=2)
        packed = kc.numel() + vc.numel() + 2 * (ks.numel() + km.numel() + vs.numel() + vm.numel()) + 2 * (kr.numel() + vr.numel())
        res["shapes"].append({"batch": b, "tokens": npos, "sdpa_fp16_us": t_sdpa, "fp16_bytes": fp16_bytes,
                              "dequant_sdpa_us": t_deq, "packed_bytes": packed})
        print(f"torch B={b} N={npos}: SDPA FP16 {t_sdpa:.1f} us ({fp16_bytes / t_sdpa / 1e3:.0f} GB/s), "
              f"dequant+SDPA {t_deq:.1f} us", flush=True)
        del kc, vc, ks, km, vs, vm, kr, vr, q
        torch.cuda.empty_cache()

    print(f"torch copy bandwidth {res['copy_gbps']:.0f} GB/s", flush=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
