using System.Diagnostics;
using KvAdaQuant.Cli.Commands;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// <c>kvaq bench --device cuda</c>: prefill and decode speed of the GPU path at given context depths. Prefill: a prompt
/// of min(ctx, <c>--prefill-tokens</c>, default 4,096) random tokens (every sequence of the batch its own copy) through <see cref="CudaDecoder.Prefill"/>
/// from an empty cache (chunks of <c>--ubatch</c> positions, default <see cref="CudaDecoder.DefaultPrefillChunk"/>; 1 runs
/// it position by position), timed to the device's end; medians over prefill runs. Decode: the cache is filled with
/// random values up to depth ctx - decodeTokens - 1 (a prefill that deep would take long), one untimed step, then
/// decodeTokens steps of one token per sequence (device argmax, token copied back each step) are timed end to end;
/// medians over runs. <c>--fit</c> reports, per context,
/// the largest batch whose cache and workspace fit next to the weights, computed from exact byte counts and verified
/// by allocating it (and by failing to allocate one more sequence).
/// </summary>
internal static class CudaBenchRunner
{
    /// <summary>Positions of the timed prefill at most, unless <c>--prefill-tokens</c> says otherwise.</summary>
    public const int PrefillLimit = 4096;

    /// <summary>Steps timed by <see cref="CudaDecoder.TimeStep"/> per context (their medians are reported).</summary>
    private const int TimedSteps = 5;

    public static int Run(
        LlamaModel m, KvPlan plan, int[] contexts, int decodeTokens, int runs, int batch, bool fit, bool asJson, int? ubatch = null, int? prefillRuns = null, int prefillLimit = PrefillLimit, bool? tensorCores = null,
        bool? attentionTensorCores = null)
    {
        using CudaContext context = DeviceOptions.OpenCuda();
        int capacity = contexts.Max();
        var watch = Stopwatch.StartNew();
        using var decoder = new CudaDecoder(context, m, plan, fit ? 1 : batch, fit ? 256 : capacity, prefillChunk: ubatch ?? CudaDecoder.DefaultPrefillChunk, tensorCoreGemm: tensorCores,
            tensorCoreAttention: attentionTensorCores);
        double loadSeconds = watch.Elapsed.TotalSeconds;
        var header = new Dictionary<string, object?>
        {
            ["model"] = m.Path,
            ["device"] = $"cuda: {context.DeviceName} ({context.Arch}, {context.MultiprocessorCount} SMs)",
            ["kv"] = plan.Name,
            ["gpu_cache"] = decoder.Layout.ToString(),
            ["weights"] = decoder.WeightTypes,
            ["weight_bytes"] = decoder.WeightBytes,
            ["load_seconds"] = loadSeconds,
            ["build"] = decoder.BuildNote,
            ["prefill_chunk"] = decoder.PrefillChunk,
            ["prefill_gemm"] = decoder.PrefillTensorCores ? "tensor-cores" : "fma",
            ["prefill_attention"] = decoder.PrefillAttentionTensorCores ? "tensor-cores" : "fma",
        };
        if (fit)
        {
            return Fit(context, m.Config, plan, contexts, decoder, header, asJson);
        }

        var rows = new List<Dictionary<string, object?>>();
        var tok = new int[batch];

        // Untimed: the first prefill launches every chunk kernel once.
        decoder.Reset();
        decoder.Prefill(PromptTokens(Math.Min(64, capacity), batch, m.Config.VocabSize));
        decoder.Synchronize();
        foreach (int ctx in contexts)
        {
            int prefillTokens = Math.Min(ctx, prefillLimit);
            int[] prompt = PromptTokens(prefillTokens, batch, m.Config.VocabSize);
            var prefillSpeeds = new List<double>();
            for (int run = 0; run < (prefillRuns ?? (prefillTokens <= 2048 ? runs : 1)); run++)
            {
                decoder.Reset();
                var pw = Stopwatch.StartNew();
                decoder.Prefill(prompt);
                decoder.Synchronize();
                prefillSpeeds.Add(prefillTokens / pw.Elapsed.TotalSeconds);
            }

            var speeds = new List<double>();
            for (int run = 0; run <= runs; run++)
            {
                decoder.FillRandom(ctx - decodeTokens - 1, (uint)(17 + run));
                Array.Fill(tok, Math.Min(1000, m.Config.VocabSize - 1));
                decoder.Step(tok);
                decoder.SampleGreedy(tok);
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < decodeTokens; i++)
                {
                    decoder.StepSampled();
                    decoder.SampleGreedy(tok);
                }

                double s = sw.Elapsed.TotalSeconds;
                if (run > 0)
                {
                    speeds.Add(decodeTokens / s);
                }
            }

            double perSeq = BenchRunner.Median(speeds);

            // Launch overhead vs GPU work of one step (see CudaDecoder.TimeStep): one step, then TimedSteps more, all at most
            // ctx deep (with fewer decode tokens than that, ctx - decodeTokens - 1 left too few free positions).
            decoder.FillRandom(Math.Max(0, ctx - Math.Max(decodeTokens, TimedSteps) - 1), 99);
            Array.Fill(tok, Math.Min(1000, m.Config.VocabSize - 1));
            decoder.Step(tok);
            var queue = new List<double>();
            var gpu = new List<double>();
            for (int i = 0; i < TimedSteps; i++)
            {
                var (q, g) = decoder.TimeStep();
                queue.Add(q);
                gpu.Add(g);
            }

            double prefill = BenchRunner.Median(prefillSpeeds);
            var row = new Dictionary<string, object?>
            {
                ["ctx"] = ctx,
                ["batch"] = batch,
                ["prefill_tokens"] = prefillTokens,
                ["prefill_tokens_per_second_per_sequence"] = prefill,
                ["prefill_tokens_per_second_total"] = prefill * batch,
                ["decode_tokens_per_second_per_sequence"] = perSeq,
                ["decode_tokens_per_second_total"] = perSeq * batch,
                ["ms_per_step"] = 1000.0 / perSeq,
                ["gpu_ms_per_step"] = BenchRunner.Median(gpu),
                ["queue_ms_per_step"] = BenchRunner.Median(queue),
                ["kv_bytes_at_ctx"] = decoder.Layout.Layers.Count == 0 ? 0 : KvBytesAt(decoder.Layout, ctx),
                ["kv_bytes_allocated"] = decoder.CacheBytes,
                ["device_bytes"] = decoder.DeviceBytes,
            };
            rows.Add(row);
            Console.Error.WriteLine($"ctx {ctx}: prefill {string.Join(", ", prefillSpeeds.Select(x => x.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))}, decode {string.Join(", ", speeds.Select(x => x.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))} tok/s per sequence");
        }

        if (asJson)
        {
            header["decode_tokens"] = decodeTokens;
            header["runs"] = runs;
            header["contexts"] = rows;
            CliRunner.PrintJson(header);
        }
        else
        {
            foreach (var kv in header)
            {
                Console.Out.WriteLine($"{kv.Key}: {kv.Value}");
            }

            Console.Out.WriteLine($"{"ctx",7} {"batch",6} {"prefill",8} {"pp tok/s/seq",13} {"tok/s/seq",10} {"tok/s total",12} {"ms/step",8} {"GPU ms",7} {"queue ms",9} {"KV bytes at ctx",16} {"device bytes",16}");
            foreach (var r in rows)
            {
                Console.Out.WriteLine($"{r["ctx"],7} {r["batch"],6} {r["prefill_tokens"],8} {(double)r["prefill_tokens_per_second_per_sequence"]!,13:F1} {(double)r["decode_tokens_per_second_per_sequence"]!,10:F1} {(double)r["decode_tokens_per_second_total"]!,12:F1} {(double)r["ms_per_step"]!,8:F2} {(double)r["gpu_ms_per_step"]!,7:F2} {(double)r["queue_ms_per_step"]!,9:F2} {(long)r["kv_bytes_at_ctx"]!,16:N0} {(long)r["device_bytes"]!,16:N0}");
            }
        }

        return 0;
    }

    // A prompt of `positions` pseudo-random tokens (a fixed LCG), position-major, every sequence the same token.
    private static int[] PromptTokens(int positions, int batch, int vocab)
    {
        var tokens = new int[positions * batch];
        uint x = 12345;
        for (int p = 0; p < positions; p++)
        {
            x = (x * 1664525) + 1013904223;
            tokens.AsSpan(p * batch, batch).Fill((int)((x >> 8) % (uint)vocab));
        }

        return tokens;
    }

    // Bytes the cache holds for `ctx` positions of every sequence (the allocation is for the largest context).
    private static long KvBytesAt(GpuKvCacheLayout layout, int ctx)
    {
        long heads = (long)layout.Batch * layout.KvHeads;
        return layout.Layers.Sum(l => l.ByteCount(heads, ctx, layout.HeadDim, layout.ResidualCapacity));
    }

    private static int Fit(CudaContext context, ModelConfig config, KvPlan plan, int[] contexts, CudaDecoder small, Dictionary<string, object?> header, bool asJson)
    {
        var (free, total) = context.MemoryInfo();
        const long margin = 256L << 20;
        long budget = free - margin;
        int sms = context.MultiprocessorCount;
        long Need(int b, int ctx)
        {
            var layout = GpuKvCacheLayout.Create(plan, config, b, ctx);
            return layout.ByteCount + CudaDecoder.WorkspaceBytes(config, layout, sms);
        }

        var rows = new List<Dictionary<string, object?>>();
        foreach (int ctx in contexts)
        {
            int lo = 0, hi = 1;
            while (Need(hi, ctx) <= budget)
            {
                lo = hi;
                hi *= 2;
            }

            while (hi - lo > 1)
            {
                int mid = lo + ((hi - lo) / 2);
                if (Need(mid, ctx) <= budget)
                {
                    lo = mid;
                }
                else
                {
                    hi = mid;
                }
            }

            bool fits = lo > 0 && TryAllocate(context, plan, config, lo, ctx, sms);
            bool oneMoreFails = !TryAllocate(context, plan, config, lo + 1, ctx, sms);
            rows.Add(new Dictionary<string, object?>
            {
                ["ctx"] = ctx,
                ["max_batch"] = lo,
                ["positions"] = (long)lo * ctx,
                ["kv_bytes"] = lo == 0 ? 0 : GpuKvCacheLayout.Create(plan, config, lo, ctx).ByteCount,
                ["workspace_bytes"] = lo == 0 ? 0 : CudaDecoder.WorkspaceBytes(config, GpuKvCacheLayout.Create(plan, config, lo, ctx), sms),
                ["allocated"] = fits,
                ["one_more_fails"] = oneMoreFails,
            });
        }

        header["device_total_bytes"] = total;
        header["free_after_weights_bytes"] = free;
        header["budget_bytes"] = budget;
        header["fit"] = rows;
        if (asJson)
        {
            CliRunner.PrintJson(header);
        }
        else
        {
            foreach (var kv in header.Where(k => k.Key != "fit"))
            {
                Console.Out.WriteLine($"{kv.Key}: {kv.Value}");
            }

            Console.Out.WriteLine($"{"ctx",7} {"max batch",10} {"positions",12} {"KV bytes",18} {"workspace",16} {"allocated",10} {"+1 fails",9}");
            foreach (var r in rows)
            {
                Console.Out.WriteLine($"{r["ctx"],7} {r["max_batch"],10} {r["positions"],12:N0} {(long)r["kv_bytes"]!,18:N0} {(long)r["workspace_bytes"]!,16:N0} {r["allocated"],10} {r["one_more_fails"],9}");
            }
        }

        GC.KeepAlive(small);
        return 0;
    }

    private static bool TryAllocate(CudaContext context, KvPlan plan, ModelConfig config, int batch, int ctx, int sms)
    {
        var layout = GpuKvCacheLayout.Create(plan, config, batch, ctx);
        try
        {
            using var cache = new CudaKvCacheBuffers(context, layout);
            using CudaDeviceBuffer workspace = context.Allocate(CudaDecoder.WorkspaceBytes(config, layout, sms));
            return true;
        }
        catch (CudaException)
        {
            return false;
        }
    }
}
