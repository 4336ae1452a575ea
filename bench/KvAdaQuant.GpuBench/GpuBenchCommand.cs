using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Gpu;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.GpuBench;

/// <summary>Verifies the GPU kernels against the CPU reference and times them; prints tables, writes results.</summary>
internal static class GpuBenchCommand
{
    public static int Run(string[] args)
    {
        GpuBenchOptions options;
        try
        {
            options = GpuBenchOptions.Parse(args);
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine("usage: kvaq-gpubench verify|bench|all [--out DIR] [--torch FILE] [--cubin FILE] [--iters N] [--splits auto|all] [--head-dim 128|64]");
            return 2;
        }

        if (!CudaContext.TryOpen(out CudaContext? context, out string reason))
        {
            Console.Error.WriteLine($"no CUDA device: {reason}");
            return 3;
        }

        using (context)
        {
            Directory.CreateDirectory(options.OutDir);
            byte[]? cubin = options.Cubin is null ? null : File.ReadAllBytes(options.Cubin);
            int headDim = options.HeadDim;
            using var attention = new CudaPackedKvAttention(context!, headDim, cubin);
            var report = new StringBuilder();
            report.AppendLine(CultureInfo.InvariantCulture, $"device: {context!.DeviceName}, {context.Arch}, {context.MultiprocessorCount} SMs; module: {attention.BuildNote}");
            foreach (CudaKernel k in new[] { attention.Fast, attention.Generic, attention.Residual, attention.Combine })
            {
                report.AppendLine(CultureInfo.InvariantCulture, $"kernel {k.Name}: {k.Registers} registers, {k.LocalBytes} B local, {k.SharedBytes} B shared");
            }

            Console.Write(report.ToString());
            bool ok = true;
            if (options.Mode is "verify" or "all")
            {
                ok &= Verify(context, attention, report, headDim);
            }

            if (options.Mode is "bench" or "all" or "profile")
            {
                ok &= Bench(context, attention, options, report, options.Mode == "profile", headDim);
            }

            File.WriteAllText(Path.Combine(options.OutDir, "gpu_report.md"), report.ToString());
            Console.WriteLine(ok ? "ALL CHECKS PASSED" : "SOME CHECKS FAILED");
            return ok ? 0 : 1;
        }
    }

    // The group size of a format spec such as "4:g64:tok".
    private static int GroupOf(string spec) => int.Parse(spec.Split(':')[1][1..], CultureInfo.InvariantCulture);

    private static (double MaxRel, double L2Rel, bool Finite) Compare(float[] got, float[] reference)
    {
        double maxErr = 0, maxRef = 0, errSq = 0, refSq = 0;
        bool finite = true;
        for (int i = 0; i < got.Length; i++)
        {
            finite &= float.IsFinite(got[i]);
            double e = Math.Abs((double)got[i] - reference[i]);
            maxErr = Math.Max(maxErr, e);
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
            errSq += e * e;
            refSq += (double)reference[i] * reference[i];
        }

        return (maxErr / maxRef, Math.Sqrt(errSq / refSq), finite);
    }

    private static void Random(Random rng, Span<float> dst, double std, Func<int, double> mean, int period)
    {
        for (int i = 0; i < dst.Length; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            dst[i] = (float)((Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2) * std) + mean(i % period));
        }
    }

    private static bool Verify(CudaContext context, CudaPackedKvAttention attention, StringBuilder report, int headDim)
    {
        var cases = new List<(string K, string V, int B, int KvHeads, int QHeads, int Positions, int Residual)>();
        foreach (string bits in new[] { "1", "1.58", "2", "3", "4", "5", "6", "8" })
        {
            cases.Add(($"{bits}:g64:tok", $"{bits}:g64:tok", 2, 2, 8, 1088, 64));
            cases.Add(($"{bits}:g64:chan", $"{bits}:g64:tok", 2, 2, 8, 1088, 64));
        }

        cases.Add(("4:g64:tok", "2:g64:tok", 2, 2, 8, 1088, 64));
        cases.Add(("2:g64:tok", "4:g64:tok", 2, 2, 8, 1088, 64));
        cases.Add(("8:g128:tok", "1.58:g32:tok", 2, 2, 8, 1088, 64));
        cases.Add(("4:g32:chan", "2:g32:tok", 2, 2, 8, 1088, 64));
        cases.Add(("3:g128:tok", "5:g32:tok", 1, 4, 8, 1061, 37));
        cases.Add(("6:g32:tok", "8:g128:chan", 2, 2, 16, 1152, 0));
        cases.Add(("4:g64:tok", "2:g64:tok", 2, 8, 32, 4160, 64));
        cases.Add(("4:g64:tok", "2:g64:tok", 1, 1, 8, 8256, 64));
        cases.Add(("4:g64:tok", "2:g64:tok", 2, 4, 4, 2112, 64));
        cases.Add(("4:g64:tok", "2:g64:tok", 1, 2, 8, 64, 64));

        bool allOk = true;
        report.AppendLine();
        report.AppendLine("## Verification against the CPU reference (double) on the same packed bytes");
        report.AppendLine();
        report.AppendLine("| K | V | B | KV heads | Q heads | positions | residual | kernel | max rel err | L2 rel err | tolerance | result |");
        report.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        int seed = 1;
        foreach (var c in cases)
        {
            var rng = new Random(seed++);
            if (GroupOf(c.K) > headDim || GroupOf(c.V) > headDim)
            {
                continue; // e.g. groups of 128 at head dim 64
            }

            PackedKvFormat kf = PackedKvFormat.Parse(c.K, headDim), vf = PackedKvFormat.Parse(c.V, headDim);
            int n = c.B * c.KvHeads * c.Positions * headDim;
            var keys = new float[n];
            var values = new float[n];
            var queries = new float[c.B * c.QHeads * headDim];
            double[] channelBias = Enumerable.Range(0, headDim).Select(i => (i % 17 == 0 ? 4.0 : 0.5) * Math.Sin(i)).ToArray();
            Random(rng, keys, 1.0, i => channelBias[i], headDim);
            Random(rng, values, 1.0, i => Math.Cos(0.3 * i), headDim);
            Random(rng, queries, 2.0, _ => 0, headDim);
            PackedKvBatch batch = PackedKvQuantizer.Quantize(keys, values, c.B, c.KvHeads, c.QHeads, c.Positions, c.Residual, kf, vf);
            float[] reference = PackedKvAttentionReference.Attend(batch, queries);
            using PackedKvDeviceCache device = attention.Upload(batch);
            using CudaDeviceBuffer q = context.Upload<float>(queries);
            using CudaDeviceBuffer output = context.Allocate(4L * queries.Length);
            foreach (var (fast, fused) in device.FastPathApplies ? new[] { (false, false), (true, false), (true, true) } : new[] { (false, false) })
            {
                output.Fill(0x7FC00000u);
                using PackedKvAttentionPass pass = attention.Prepare(device, q, output, fast, fuseCombine: fused);
                pass.Run();
                context.Synchronize();
                var got = new float[queries.Length];
                output.CopyTo<float>(got);
                var (maxRel, l2Rel, finite) = Compare(got, reference);
                double tol = fast ? 1e-3 : 1e-5;
                bool ok = finite && maxRel <= tol;
                allOk &= ok;
                report.AppendLine(CultureInfo.InvariantCulture, $"| {c.K} | {c.V} | {c.B} | {c.KvHeads} | {c.QHeads} | {c.Positions} | {c.Residual} | {(pass.UsesFastKernel ? pass.LaunchCount == 1 ? "k4v2 tensor-core (FP16), fused merge" : "k4v2 tensor-core (FP16)" : "generic (FP32)")} | {maxRel:E2} | {l2Rel:E2} | {tol:E0} | {(ok ? "pass" : "FAIL")} |");
                Console.WriteLine(report.ToString().Split('\n')[^2]);
            }
        }

        return allOk;
    }

    private sealed record Shape(int Batch, int Positions);

    // The first entry is the default build (the defaults in PackedKvAttention.cu); the others are compiled for comparison.
    // ResidualBlocks: blocks the FP16 window is split over (0: the library's default).
    private static readonly (string Name, string[] Defines, int ResidualBlocks)[] Variants =
    [
        ("v3-b3", [], 0),
        ("v3-b3-r1", [], 1),
        ("fold-b4-r1", ["FAST_V3=0", "FAST_MIN_BLOCKS=4"], 1),
    ];

    private static bool Bench(CudaContext context, CudaPackedKvAttention attention, GpuBenchOptions options, StringBuilder report, bool profileOnly, int headDim)
    {
        const int kvHeads = 8, qHeads = 32, residual = 64;
        var kf = new PackedKvFormat(4, 64, PackedKvAxis.PerToken, headDim);
        var vf = new PackedKvFormat(2, 64, PackedKvAxis.PerToken, headDim);
        Shape[] shapes = profileOnly ? [new(8, 32768)] : [new(8, 32768), new(1, 32768), new(1, 131072), new(16, 8192)];
        JsonElement? torch = null;
        if (options.TorchJson is not null && File.Exists(options.TorchJson))
        {
            torch = JsonDocument.Parse(File.ReadAllText(options.TorchJson)).RootElement;
        }

        var variants = new List<(string Name, CudaPackedKvAttention Module, int ResidualBlocks)> { (Variants[0].Name, attention, Variants[0].ResidualBlocks) };
        if (!profileOnly && options.Cubin is null)
        {
            foreach (var v in Variants.Skip(1).Where(v => headDim == 128 || v.Defines.Length == 0))
            {
                var module = v.Defines.Length == 0 ? attention : new CudaPackedKvAttention(context, headDim, null, v.Defines);
                variants.Add((v.Name, module, v.ResidualBlocks));
                report.AppendLine(CultureInfo.InvariantCulture, $"variant {v.Name}: kvq_k4v2_fast {module.Fast.Registers} registers, {module.Fast.LocalBytes} B local");
            }
        }

        double copyGbps = torch?.GetProperty("copy_gbps").GetDouble() ?? double.NaN;
        var rows = new List<string>();
        var sweep = new StringBuilder();
        bool ok = true;
        var rng = new Random(7);
        foreach (Shape s in shapes)
        {
            int quantized = s.Positions - residual;
            long bytesOne = ((long)s.Batch * kvHeads * (kf.BytesPerHead(quantized) + vf.BytesPerHead(quantized))) + (4L * s.Batch * kvHeads * residual * headDim);
            int copies = (int)Math.Clamp((3L * 60_000_000 + bytesOne - 1) / bytesOne, 1, 16);
            var caches = new List<PackedKvDeviceCache>();
            for (int i = 0; i < copies; i++)
            {
                caches.Add(attention.AllocateRandom(kf, vf, s.Batch, kvHeads, qHeads, quantized, residual, (uint)(100 + (17 * i))));
            }

            var queries = new float[s.Batch * qHeads * headDim];
            Random(rng, queries, 1.0, _ => 0, headDim);
            using CudaDeviceBuffer q = context.Upload<float>(queries);
            using CudaDeviceBuffer output = context.Allocate(4L * queries.Length);
            using CudaDeviceBuffer outputGeneric = context.Allocate(4L * queries.Length);
            int auto = attention.DefaultTokensPerSplit(caches[0]);
            if (profileOnly)
            {
                using PackedKvAttentionPass p = attention.Prepare(caches[0], q, output, true, auto);
                for (int i = 0; i < 5; i++)
                {
                    p.Run();
                }

                context.Synchronize();
                caches.ForEach(c => c.Dispose());
                return true;
            }

            using PackedKvAttentionPass genericPass = attention.Prepare(caches[0], q, outputGeneric, false);
            outputGeneric.Fill(0x7FC00000u);
            genericPass.Run();
            context.Synchronize();
            var reference = new float[queries.Length];
            outputGeneric.CopyTo<float>(reference);
            double genericUs = MedianMicroseconds(context, [genericPass], 10);

            // One pass into output (NaN-filled first), compared with the generic kernel's result.
            (double MaxRel, bool Finite) RunAndCompare(PackedKvAttentionPass pass)
            {
                output.Fill(0x7FC00000u);
                pass.Run();
                context.Synchronize();
                var got = new float[queries.Length];
                output.CopyTo<float>(got);
                var (maxRel, _, finite) = Compare(got, reference);
                return (maxRel, finite);
            }

            double defaultUs = double.NaN, bestUs = double.MaxValue, worstRel = 0, kernelOnlyUs = double.NaN, combineUs = double.NaN, fusedUs = double.NaN, ordinaryUs = double.NaN;
            string bestAt = string.Empty;
            foreach (var (name, module, residualBlocks) in variants)
            {
                foreach (int tps in (options.SweepSplits ? new[] { auto, 1024, 2048, 3072, 4096, 5504 } : new[] { auto }).Distinct())
                {
                    var passes = caches.Select(c => module.Prepare(c, q, output, true, tps, residualBlocks: residualBlocks)).ToList();
                    double us = MedianMicroseconds(context, passes, options.Iterations);
                    var (maxRel, finite) = RunAndCompare(passes[0]);
                    worstRel = Math.Max(worstRel, finite ? maxRel : double.PositiveInfinity);
                    ok &= finite && maxRel <= 1e-3;
                    if (name == variants[0].Name && tps == auto)
                    {
                        defaultUs = us;
                        var fusedPasses = caches.Select(c => module.Prepare(c, q, output, true, tps, fuseCombine: true)).ToList();
                        fusedUs = MedianMicroseconds(context, fusedPasses, options.Iterations);
                        kernelOnlyUs = MedianStage(context, passes, 0, options.Iterations);
                        combineUs = MedianStage(context, passes, passes[0].LaunchCount - 1, options.Iterations);
                        var (fusedRel, fusedFinite) = RunAndCompare(fusedPasses[0]);
                        ok &= fusedFinite && fusedRel <= 1e-3;
                        fusedPasses.ForEach(p => p.Dispose());
                        var ordinaryPasses = caches.Select(c => module.Prepare(c, q, output, true, tps, dependentCombine: false)).ToList();
                        ordinaryUs = MedianMicroseconds(context, ordinaryPasses, options.Iterations);
                        var (ordinaryRel, ordinaryFinite) = RunAndCompare(ordinaryPasses[0]);
                        ok &= ordinaryFinite && ordinaryRel <= 1e-3;
                        ordinaryPasses.ForEach(p => p.Dispose());
                    }

                    if (us < bestUs)
                    {
                        bestUs = us;
                        bestAt = $"{name}, {tps}";
                    }

                    sweep.AppendLine(CultureInfo.InvariantCulture, $"| {s.Batch} x {s.Positions} | {name} | {tps}{(tps == auto ? " (auto)" : string.Empty)} | {passes[0].Splits} | {us:F1} | {bytesOne / us / 1e3:F0} | {maxRel:E1} |");
                    passes.ForEach(p => p.Dispose());
                }
            }

            string torchCols = " | | ";
            if (torch is JsonElement t)
            {
                foreach (JsonElement e in t.GetProperty("shapes").EnumerateArray())
                {
                    if (e.GetProperty("batch").GetInt32() == s.Batch && e.GetProperty("tokens").GetInt32() == s.Positions)
                    {
                        double sdpa = e.GetProperty("sdpa_fp16_us").GetDouble(), deq = e.GetProperty("dequant_sdpa_us").GetDouble();
                        torchCols = string.Create(CultureInfo.InvariantCulture, $" | {sdpa:F1} ({sdpa / defaultUs:F1}x) | {deq:F0} ({deq / defaultUs:F0}x)");
                    }
                }
            }

            rows.Add(string.Create(
                CultureInfo.InvariantCulture,
                $"| {s.Batch} x {s.Positions:N0} | {bytesOne / 1e6:F1} | {defaultUs:F1} | {bytesOne / defaultUs / 1e3:F0} | {(double.IsNaN(copyGbps) ? "-" : (100 * bytesOne / defaultUs / 1e3 / copyGbps).ToString("F0", CultureInfo.InvariantCulture) + "%")} | {fusedUs:F1} | {ordinaryUs:F1} | {kernelOnlyUs:F1} + {combineUs:F1} | {bestUs:F1} ({bestAt}) | {genericUs:F0}{torchCols} | {worstRel:E1} |"));
            Console.WriteLine(rows[^1]);
            caches.ForEach(c => c.Dispose());
        }

        foreach (var v in variants.Skip(1).Where(v => v.Module != attention))
        {
            v.Module.Dispose();
        }

        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"## Decode attention, K4V2 (per-token groups of 64, FP16 scale and min) + FP16 residual window of 64; 32 query heads, 8 KV heads, head dim {headDim}");
        report.AppendLine();
        if (torch is JsonElement tj)
        {
            report.AppendLine(CultureInfo.InvariantCulture, $"PyTorch {tj.GetProperty("torch").GetString()} on {tj.GetProperty("device").GetString()}, copy bandwidth {copyGbps:F0} GB/s (read + write).");
            report.AppendLine();
        }

        report.AppendLine("| batch x positions | packed MB | ours (us, median) | GB/s | of copy BW | with the fused combine (us) | combine as an ordinary launch (us) | split kernel + combine alone (us) | best variant (us) | generic FP32 kernel (us) | PyTorch SDPA FP16 (us) | dequantize + SDPA (us) | max rel diff vs FP32 kernel |");
        report.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        rows.ForEach(r => report.AppendLine(r));
        report.AppendLine();
        report.AppendLine("### Variant and split sweep (tensor-core kernel)");
        report.AppendLine();
        report.AppendLine("| batch x positions | variant | tokens per split | splits | us (median) | GB/s | max rel diff vs FP32 kernel |");
        report.AppendLine("|---|---|---|---|---|---|---|");
        report.Append(sweep);
        Console.WriteLine(report.ToString()[report.ToString().IndexOf("## Decode attention", StringComparison.Ordinal)..]);
        return ok;
    }

    private static double MedianStage(CudaContext context, IReadOnlyList<PackedKvAttentionPass> passes, int stage, int iterations)
    {
        var timers = Enumerable.Range(0, iterations).Select(_ => new CudaEventTimer(context)).ToList();
        for (int i = 0; i < iterations; i++)
        {
            timers[i].Start();
            passes[i % passes.Count].RunLaunch(stage);
            timers[i].Stop();
        }

        var ms = timers.Select(t => (double)t.ElapsedMilliseconds()).Order().ToList();
        timers.ForEach(t => t.Dispose());
        return ms[ms.Count / 2] * 1000.0;
    }

    private static double MedianMicroseconds(CudaContext context, IReadOnlyList<PackedKvAttentionPass> passes, int iterations)
    {
        for (int i = 0; i < Math.Min(10, iterations); i++)
        {
            passes[i % passes.Count].Run();
        }

        context.Synchronize();
        var timers = Enumerable.Range(0, iterations).Select(_ => new CudaEventTimer(context)).ToList();
        for (int i = 0; i < iterations; i++)
        {
            timers[i].Start();
            passes[i % passes.Count].Run();
            timers[i].Stop();
        }

        var ms = timers.Select(t => (double)t.ElapsedMilliseconds()).Order().ToList();
        timers.ForEach(t => t.Dispose());
        Debug.Assert(ms.Count == iterations, "one time per iteration");
        return ms[ms.Count / 2] * 1000.0;
    }
}
