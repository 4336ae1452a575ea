using System.CommandLine;
using System.Globalization;
using KvAdaQuant.Cli.Bench;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq bench</c>: prefill and decode tokens/s, KV bytes and peak RSS, optionally side by side with llama.cpp.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var kv = new Option<string?>("--kv") { Description = "KV cache of kvaq (fp32, fp16, or a plan such as k8v8); default fp16" };
        var kvPlan = CommonOptions.KvPlan();
        var ctx = new Option<string?>("--ctx", "-c") { Description = "comma-separated context depths, e.g. 128,4096,16384 (default 128; with --attention 32768)" };
        var threads = CommonOptions.Threads(2, "threads for both engines (0 = all cores)");
        var vs = new Option<string?>("--vs") { Description = "also run llama.cpp (through LLamaSharp) on the same GGUF file: llama.cpp" };
        var vsCache = new Option<string?>("--vs-cache") { Description = "llama.cpp cache type, TYPE or K/V from f32, f16, q8_0, q4_0 (default: the closest to --kv or --kv-plan)" };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "decode steps timed per run", DefaultValueFactory = _ => 32 };
        var runs = new Option<int?>("--runs") { Description = $"timed decode runs per engine and context (medians are reported; default 3); with --attention, alternated runs of attention steps and triads (default {AttentionBenchRunner.DefaultRuns})" };
        var prefillRuns = new Option<int?>("--prefill-runs") { Description = "timed prefills per engine and context (default: --runs up to ctx 2048, else 1)" };
        var ubatch = CommonOptions.Ubatch();
        var settleMs = new Option<int>("--settle-ms") { Description = $"with --vs: milliseconds of idle before each timed run, so that one engine's spinning threads (llama.cpp's OpenMP workers) have stopped before the other is timed (default {BenchRunner.DefaultSettleMs}; 0 = none)", DefaultValueFactory = _ => BenchRunner.DefaultSettleMs };
        var json = CommonOptions.Json();
        var device = DeviceOptions.Device();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var batch = new Option<int>("--batch") { Description = "sequences decoded together, each with its own cache: on the CPU one forward pass a step for all of them (prefill runs the prompt in each; tokens/s count all sequences; llama-batched-bench's -npl; with --vs llama.cpp the same in one llama.cpp context of as many sequences); with --device cuda the GPU batch", DefaultValueFactory = _ => 1 };
        var prefillTokens = new Option<int?>("--prefill-tokens") { Description = $"with --device cuda: prompt tokens of the timed prefill, at most ctx (default {CudaBenchRunner.PrefillLimit})" };
        var prefillGemm = new Option<string?>("--prefill-gemm") { Description = "with --device cuda: the prefill chunk's matrix products, tensor-cores (mma, compute capability 8.0+), fma (FP32 FMAs) or auto (default: tensor cores where the device has them)" };
        var prefillAttention = new Option<string?>("--prefill-attention") { Description = "with --device cuda: the prefill chunk's attention, tensor-cores (mma, compute capability 8.0+, head dim a multiple of 16 up to 128), fma (FP32 FMAs) or auto (default: tensor cores where the device and head dim allow)" };
        var fit = new Option<bool>("--fit") { Description = "with --device cuda: the largest batch per --ctx whose cache fits next to the weights (computed from exact byte counts, verified by allocating it)" };
        var attentionAlone = new Option<bool>("--attention") { Description = "attention alone: one decode step of a whole layer's attention over the packed cache, timed against a STREAM-style triad in the same run (GB/s of packed K/V read, and its share of the triad's)" };
        var shape = new Option<string?>("--shape") { Description = $"with --attention: the attention shape of a preset instead of a model file: {SyntheticModelPreset.Names}" };
        var cmd = new Command("bench", "Prefill and decode tokens/s, KV bytes and peak RSS; with --vs llama.cpp the same from llama.cpp, engines alternated run by run; with --device cuda the GPU decode path; with --attention attention alone against a memory-bandwidth triad.")
        {
            model, tokenizer, kv, kvPlan, ctx, threads, vs, vsCache, decodeTokens, runs, prefillRuns, ubatch, settleMs, json, device, batch, fit, prefillTokens, prefillGemm, prefillAttention, attnInt8, attnInt8Values, attentionAlone, shape,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            if (r.GetValue(attentionAlone))
            {
                foreach (var unused in new Option[] { vs, vsCache, decodeTokens, prefillRuns, ubatch, settleMs, batch, fit, prefillTokens, prefillGemm, prefillAttention, tokenizer })
                {
                    if (r.GetResult(unused) is { Implicit: false })
                    {
                        throw new ArgumentException($"{unused.Name} does not apply to --attention (attention alone: no prompt, no decode of tokens, no llama.cpp, no GPU)");
                    }
                }

                if (r.GetValue(device) == DeviceOptions.Cuda)
                {
                    throw new ArgumentException("--attention times the CPU attention kernels; it cannot be combined with --device cuda");
                }

                return RunAttention(
                    r.GetResult(model) is { Implicit: false } ? r.GetValue(model) : null,
                    r.GetValue(shape),
                    r.GetValue(model)!,
                    r.GetValue(kv),
                    r.GetValue(kvPlan),
                    r.GetValue(ctx) ?? "32768",
                    r.GetValue(threads),
                    r.GetValue(runs) ?? AttentionBenchRunner.DefaultRuns,
                    CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values)),
                    r.GetValue(json));
            }

            if (r.GetValue(shape) is { } shapeName)
            {
                throw new ArgumentException($"--shape '{shapeName}' applies to --attention only (the end-to-end bench runs a model file: --model F)");
            }

            var contexts = ParseContexts(r.GetValue(ctx) ?? "128");
            int nDecode = r.GetValue(decodeTokens);
            int nRuns = r.GetValue(runs) ?? 3;
            int nThreads = r.GetValue(threads);
            var attention = CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values));
            if (nThreads < 0)
            {
                throw new ArgumentException($"--threads must be >= 0, got {nThreads}");
            }

            nThreads = nThreads == 0 ? Environment.ProcessorCount : nThreads;
            if (nDecode < 1)
            {
                throw new ArgumentException($"--decode-tokens must be at least 1, got {nDecode}");
            }

            if (nRuns < 1)
            {
                throw new ArgumentException($"--runs must be at least 1, got {nRuns}");
            }

            string? vsName = r.GetValue(vs);
            if (vsName is not null && vsName != "llama.cpp")
            {
                throw new ArgumentException($"--vs '{vsName}': the only engine to compare with is llama.cpp");
            }

            int nBatch = r.GetValue(batch);
            if (nBatch < 1)
            {
                throw new ArgumentException($"--batch must be >= 1, got {nBatch}");
            }

            if (vsName is null && r.GetValue(vsCache) is { } unusedCache)
            {
                throw new ArgumentException($"--vs-cache '{unusedCache}' applies only with --vs llama.cpp (it sets llama.cpp's cache type)");
            }

            int? nPrefillRuns = r.GetValue(prefillRuns);
            if (nPrefillRuns is < 1)
            {
                throw new ArgumentException($"--prefill-runs must be at least 1, got {nPrefillRuns}");
            }

            foreach (int c in contexts)
            {
                if (BenchRunner.PromptLength(c, nDecode, nRuns) < 1)
                {
                    throw new ArgumentException($"--ctx {c} must exceed --runs x --decode-tokens = {(long)nRuns * nDecode} (the prompt is ctx - runs x decode tokens)");
                }
            }

            int? nUbatch = CommonOptions.CheckUbatch(r.GetValue(ubatch));
            int nSettle = r.GetValue(settleMs);
            if (nSettle is < 0 or > 60_000)
            {
                throw new ArgumentException($"--settle-ms must be 0-60000 milliseconds, got {nSettle}");
            }

            int PrefillRunsFor(int c) => nPrefillRuns ?? (c <= 2048 ? nRuns : 1);

            string? kvText = r.GetValue(kv);
            string? planPath = r.GetValue(kvPlan);
            bool asJson = r.GetValue(json);
            Action<string>? log = asJson ? null : Console.Error.WriteLine;
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            foreach (int c in contexts)
            {
                if (c > m.Config.ContextLength)
                {
                    throw new ArgumentException($"--ctx {c} exceeds the model's context length {m.Config.ContextLength}");
                }
            }

            var plan = KvAdaQuant.KvCache.KvCacheFactory.ResolvePlan(planPath is null ? kvText ?? "fp16" : kvText, planPath, m.Config.Layers);
            plan.Validate(m.Config.Layers, m.Config.HeadDim);
            CommonOptions.NoteIfNeverQuantized(plan, contexts);
            string kvOption = planPath is null ? $"--kv '{kvText ?? "fp16"}'" : $"--kv-plan {planPath}";
            string kvName = planPath is null ? kvText ?? "fp16" : plan.Name;
            (string K, string V)? llamaTypes = null;
            if (vsName is not null && r.GetValue(device) != DeviceOptions.Cuda)
            {
                if (!Formats.Gguf.GgufFile.IsGgufFile(m.Path))
                {
                    throw new ArgumentException($"--vs llama.cpp: {m.Path} is not a GGUF file; llama.cpp needs the same model as GGUF (kvaq convert)");
                }

                string? vc = r.GetValue(vsCache);
                var (tk, tv) = vc is not null ? LlamaCppCacheMatch.Parse(vc) : LlamaCppCacheMatch.For(plan, kvOption);
                int hd = m.Config.HeadDim;
                foreach (var (side, type) in new[] { ("K", tk), ("V", tv) })
                {
                    if (LlamaCppCacheMatch.IsBlockQuantized(type) && hd % 32 != 0)
                    {
                        throw new ArgumentException(vc is not null
                            ? $"--vs-cache '{vc}': llama.cpp's {type} packs blocks of 32 values, which do not divide the head size {hd} of {m.Path}"
                            : $"{kvOption}: llama.cpp's closest {side} cache type is {type}, whose blocks of 32 values do not divide the head size {hd} of {m.Path}; pass --vs-cache f16 or f32");
                    }
                }

                llamaTypes = (tk, tv);
            }

            if (r.GetValue(device) == DeviceOptions.Cuda)
            {
                if (vsName is not null)
                {
                    throw new ArgumentException("--vs llama.cpp runs on the CPU; it cannot be combined with --device cuda");
                }

                if (attention != KvAdaQuant.KvCache.AttentionPrecision.Fp32)
                {
                    throw new ArgumentException($"{CommonOptions.AttentionFlag(attention)} selects a CPU attention kernel; it cannot be combined with --device cuda");
                }

                int nPrefillTokens = r.GetValue(prefillTokens) ?? CudaBenchRunner.PrefillLimit;
                if (nPrefillTokens < 1)
                {
                    throw new ArgumentException($"--prefill-tokens must be at least 1, got {nPrefillTokens}");
                }

                bool? tensorCores = ParseKernelChoice("--prefill-gemm", r.GetValue(prefillGemm));
                bool? attentionTensorCores = ParseKernelChoice("--prefill-attention", r.GetValue(prefillAttention));
                return CudaBenchRunner.Run(m, plan, contexts, nDecode, nRuns, nBatch, r.GetValue(fit), asJson, nUbatch, nPrefillRuns, nPrefillTokens, tensorCores, attentionTensorCores);
            }

            if (r.GetValue(fit))
            {
                throw new ArgumentException("--fit applies to --device cuda only");
            }

            if (r.GetResult(prefillGemm) is { Implicit: false })
            {
                throw new ArgumentException("--prefill-gemm applies to --device cuda only (the GPU prefill's matrix products)");
            }

            if (r.GetResult(prefillAttention) is { Implicit: false })
            {
                throw new ArgumentException("--prefill-attention applies to --device cuda only (the GPU prefill's chunk attention)");
            }

            if (r.GetResult(prefillTokens) is { Implicit: false })
            {
                throw new ArgumentException("--prefill-tokens applies to --device cuda only (the CPU bench's prompt is ctx - runs x decode tokens)");
            }

            var engines = new List<IBenchEngine>();
            try
            {
                var kvaqEngine = new KvaqBenchEngine(m, plan, nThreads, attention, nUbatch, nBatch);
                engines.Add(kvaqEngine);

                // kvaq alone first, at the largest context: its peak RSS before llama.cpp maps its copy of the weights.
                // Without --vs the whole run is kvaq alone, so this pass is skipped.
                if (vsName is not null)
                {
                    BenchRunner.Run(engines, contexts.Max(), nDecode, 1, 1, m.Config.VocabSize, null);
                }

                long kvaqPeak = ProcessMemory.PeakResidentBytes();
                string? llamaCache = null;
                if (llamaTypes is var (tk, tv))
                {
                    engines.Add(LlamaCppBenchEngineFactory.Create(m.Path, tk, tv, nThreads, nBatch));
                    llamaCache = $"{tk}/{tv}";
                }

                var results = contexts.Select(c => BenchRunner.Run(engines, c, nDecode, nRuns, PrefillRunsFor(c), m.Config.VocabSize, log, nSettle)).ToList();
                // The whole run includes the kvaq pass read above. VmHWM is max(recorded high-water mark, current RSS)
                // and the kernel's current RSS is an approximate per-CPU sum, so a later reading can come out a few
                // pages lower than an earlier one (seen once in the tests).
                long peak = Math.Max(ProcessMemory.PeakResidentBytes(), kvaqPeak);
                if (vsName is null)
                {
                    kvaqPeak = peak;
                }
                if (asJson)
                {
                    var report = new Dictionary<string, object?>
                    {
                        ["model"] = m.Path,
                        ["kv"] = kvName,
                        ["kv_plan"] = planPath,
                        ["attention"] = CommonOptions.AttentionName(attention),
                        ["llama_cpp.cache"] = llamaCache,
                        ["threads"] = nThreads,
                        ["runs"] = nRuns,
                        ["settle_ms"] = engines.Count > 1 ? nSettle : 0,
                        ["kvaq.ubatch"] = kvaqEngine.PrefillBatch,
                        ["batch"] = nBatch,
                        ["kvaq.peak_rss_bytes"] = kvaqPeak,
                        ["peak_rss_bytes"] = peak,
                        ["contexts"] = results.Select(x => x.ToJson()).ToList(),
                    };
                    CliRunner.PrintJson(report);
                }
                else
                {
                    PrintTable(results, nThreads, kvaqPeak, peak, kvaqEngine.PrefillBatch, nSettle, nBatch);
                }
            }
            finally
            {
                foreach (var e in engines)
                {
                    e.Dispose();
                }
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// <c>kvaq bench --attention</c>: the attention shape of <paramref name="shapeName"/> (a preset) or of the model file
    /// (<paramref name="explicitModel"/>, else the default <paramref name="modelPath"/>), then per context the attention
    /// steps and triads of <see cref="AttentionBenchRunner"/>, as a table or JSON.
    /// </summary>
    private static int RunAttention(string? explicitModel, string? shapeName, string modelPath, string? kvText, string? planPath, string ctxText, int threads, int runs, AttentionPrecision attention, bool asJson)
    {
        if (runs < 1)
        {
            throw new ArgumentException($"--runs must be at least 1, got {runs}");
        }

        var contexts = ParseContexts(ctxText);
        AttentionShape shape;
        string? modelFile = null;
        if (shapeName is not null)
        {
            if (explicitModel is not null)
            {
                throw new ArgumentException($"--model {explicitModel} and --shape '{shapeName}' are exclusive: give one (--shape takes a preset's attention shape, --model a model file's)");
            }

            var preset = SyntheticModelPreset.All.FirstOrDefault(p => p.Name == shapeName)
                ?? throw new ArgumentException($"--shape '{shapeName}': unknown shape; known shapes: {SyntheticModelPreset.Names}");
            shape = AttentionShape.Of(preset.Config, preset.Name);
        }
        else
        {
            // The model file supplies the shape only: its weights are never read.
            using var m = ModelLoader.Load(modelPath);
            modelFile = m.Path;
            shape = AttentionShape.Of(m.Config, Path.GetFileName(m.Path));
        }

        foreach (int c in contexts)
        {
            if (c > shape.ContextLength)
            {
                throw new ArgumentException($"--ctx {c} exceeds the context length {shape.ContextLength} of {(modelFile is null ? $"the {shape.Name} shape" : modelFile)}");
            }
        }

        var plan = KvCacheFactory.ResolvePlan(planPath is null ? kvText ?? "fp16" : kvText, planPath, shape.Layers);
        plan.Validate(shape.Layers, shape.HeadDim);
        AttentionBenchRunner.Check(shape, plan, attention);
        CommonOptions.NoteIfNeverQuantized(plan, contexts);
        string kvName = planPath is null ? kvText ?? "fp16" : plan.Name;
        int nThreads = threads == 0 ? Environment.ProcessorCount : threads;
        Action<string>? log = asJson ? null : Console.Error.WriteLine;
        double? loadStart = LoadAverage.OneMinute();
        var results = new List<AttentionBenchResult>();
        using (var pool = new WorkerPool(nThreads))
        using (var onePool = new WorkerPool(1))
        using (var triad = new TriadBandwidth())
        {
            foreach (int c in contexts)
            {
                results.Add(AttentionBenchRunner.Run(shape, plan, attention, c, pool, onePool, triad, runs, log));
            }
        }

        double? loadEnd = LoadAverage.OneMinute();
        if (asJson)
        {
            CliRunner.PrintJson(new Dictionary<string, object?>
            {
                ["mode"] = "attention",
                ["model"] = modelFile,
                ["shape"] = modelFile is null ? shape.Name : null,
                ["layers"] = shape.Layers,
                ["kv_heads"] = shape.KvHeads,
                ["query_heads"] = shape.QueryHeads,
                ["head_dim"] = shape.HeadDim,
                ["kv"] = kvName,
                ["kv_plan"] = planPath,
                ["attention"] = CommonOptions.AttentionName(attention),
                ["threads"] = nThreads,
                ["runs"] = runs,
                ["load_average.start"] = loadStart,
                ["load_average.end"] = loadEnd,
                ["contexts"] = results.Select(x => x.ToJson()).ToList(),
            });
        }
        else
        {
            PrintAttentionTable(shape, modelFile, kvName, attention, nThreads, runs, loadStart, loadEnd, results);
        }

        return 0;
    }

    private static void PrintAttentionTable(AttentionShape shape, string? modelFile, string kv, AttentionPrecision attention, int threads, int runs, double? loadStart, double? loadEnd, List<AttentionBenchResult> results)
    {
        var ci = CultureInfo.InvariantCulture;
        string load = loadStart is double a && loadEnd is double b ? string.Create(ci, $"; load average {a:F2} -> {b:F2}") : string.Empty;
        Console.Out.WriteLine(string.Create(ci, $"attention alone: {(modelFile is null ? $"{shape.Name} shape" : modelFile)} ({shape.KvHeads} KV heads x {shape.GroupSize} query heads, head dim {shape.HeadDim}), kv {kv}, attention {CommonOptions.AttentionName(attention)}, {threads} threads; medians of {runs} alternated runs{load}"));
        Console.Out.WriteLine($"{"ctx",7} {"layers",6} {"MB/step",9} {"step ms median",15} {"step ms min",12} {"GB/s",7} {"triad GB/s",11} {"share",7} {"GB/s/thread",12} {"1-thread triad",15} {"share",7}");
        foreach (var x in results)
        {
            Console.Out.WriteLine(string.Create(ci, $"{x.Ctx,7} {x.Layers,6} {x.BytesPerStep / 1e6,9:F2} {x.MedianStepSeconds * 1e3,15:F3} {x.MinStepSeconds * 1e3,12:F3} {x.GigabytesPerSecond,7:F2} {x.TriadGigabytesPerSecond,11:F2} {100 * x.TriadShare,6:F1}% {x.GigabytesPerSecond / x.Threads,12:F2} {x.OneThreadTriadGigabytesPerSecond,15:F2} {100 * x.PerThreadShareOfOneThreadTriad,6:F1}%"));
        }
    }

    private static int[] ParseContexts(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0)
        {
            throw new ArgumentException("--ctx: no context given");
        }

        return parts.Select(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0
            ? v
            : throw new ArgumentException($"--ctx '{text}': '{p}' is not a positive integer")).ToArray();
    }

    /// <summary><c>--prefill-gemm</c> or <c>--prefill-attention</c> (<paramref name="option"/>): null for auto, else whether the tensor-core kernels run.</summary>
    internal static bool? ParseKernelChoice(string option, string? value) => value switch
    {
        null or "auto" => null,
        "tensor-cores" => true,
        "fma" => false,
        _ => throw new ArgumentException($"{option}: expected tensor-cores, fma or auto, got '{value}'"),
    };

    private static void PrintTable(List<BenchContextResult> results, int threads, long kvaqPeak, long peak, int ubatch, int settleMs, int batch)
    {
        string settle = results.Any(r => r.Engines.Count > 1) ? $"; {settleMs} ms idle before each timed run" : string.Empty;
        string sequences = batch > 1 ? $"; {batch} sequences decoded together, tokens/s of all of them" : string.Empty;
        Console.Out.WriteLine($"threads {threads}; kvaq prefill {ubatch} tokens a pass{settle}{sequences}; medians; peak RSS kvaq alone {kvaqPeak / 1048576.0:F0} MiB, whole run {peak / 1048576.0:F0} MiB");
        Console.Out.WriteLine($"{"ctx",7} {"engine",-10} {"cache",-34} {"prefill tok/s",14} {"decode tok/s",13} {"KV bytes",14}");
        foreach (var res in results)
        {
            foreach (var e in res.Engines)
            {
                Console.Out.WriteLine($"{res.Ctx,7} {e.Name,-10} {e.Cache,-34} {e.PrefillTokensPerSecond,14:F1} {e.DecodeTokensPerSecond,13:F2} {e.KvBytes,14:N0}");
            }

            if (res.Engines.Count == 2)
            {
                Console.Out.WriteLine($"{res.Ctx,7} {"ratio",-10} {"kvaq / llama.cpp",-34} {res.Engines[0].PrefillTokensPerSecond / res.Engines[1].PrefillTokensPerSecond,14:F2} {res.Engines[0].DecodeTokensPerSecond / res.Engines[1].DecodeTokensPerSecond,13:F2}");
            }
        }
    }
}
