using System.CommandLine;
using System.Globalization;
using KvAdaQuant.Cli.Bench;
using KvAdaQuant.Formats;

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
        var ctx = new Option<string>("--ctx", "-c") { Description = "comma-separated context depths, e.g. 128,4096,16384", DefaultValueFactory = _ => "128" };
        var threads = CommonOptions.Threads(2, "threads for both engines (0 = all cores)");
        var vs = new Option<string?>("--vs") { Description = "also run llama.cpp (through LLamaSharp) on the same GGUF file: llama.cpp" };
        var vsCache = new Option<string?>("--vs-cache") { Description = "llama.cpp cache type, TYPE or K/V from f32, f16, q8_0, q4_0 (default: the closest to --kv or --kv-plan)" };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "decode steps timed per run", DefaultValueFactory = _ => 32 };
        var runs = new Option<int>("--runs") { Description = "timed decode runs per engine and context (medians are reported)", DefaultValueFactory = _ => 3 };
        var prefillRuns = new Option<int?>("--prefill-runs") { Description = "timed prefills per engine and context (default: --runs up to ctx 2048, else 1)" };
        var json = CommonOptions.Json();
        var device = DeviceOptions.Device();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var batch = new Option<int>("--batch") { Description = "sequences decoded together (--device cuda)", DefaultValueFactory = _ => 1 };
        var fit = new Option<bool>("--fit") { Description = "with --device cuda: the largest batch per --ctx whose cache fits next to the weights (computed from exact byte counts, verified by allocating it)" };
        var cmd = new Command("bench", "Prefill and decode tokens/s, KV bytes and peak RSS; with --vs llama.cpp the same from llama.cpp, engines alternated run by run; with --device cuda the GPU decode path.")
        {
            model, tokenizer, kv, kvPlan, ctx, threads, vs, vsCache, decodeTokens, runs, prefillRuns, json, device, batch, fit, attnInt8, attnInt8Values,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var contexts = ParseContexts(r.GetValue(ctx)!);
            int nDecode = r.GetValue(decodeTokens);
            int nRuns = r.GetValue(runs);
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

            int? nPrefillRuns = r.GetValue(prefillRuns);
            if (nPrefillRuns is < 1)
            {
                throw new ArgumentException($"--prefill-runs must be at least 1, got {nPrefillRuns}");
            }

            foreach (int c in contexts)
            {
                if (BenchRunner.PromptLength(c, nDecode, nRuns) < 1)
                {
                    throw new ArgumentException($"--ctx {c} must exceed --runs x --decode-tokens = {nRuns * nDecode} (the prompt is ctx - runs x decode tokens)");
                }
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
            string kvOption = planPath is null ? $"--kv '{kvText ?? "fp16"}'" : $"--kv-plan {planPath}";
            string kvName = planPath is null ? kvText ?? "fp16" : plan.Name;
            (string K, string V)? llamaTypes = null;
            if (vsName is not null && r.GetValue(device) != DeviceOptions.Cuda)
            {
                if (!IsGguf(m.Path))
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

                int b = r.GetValue(batch);
                if (b < 1)
                {
                    throw new ArgumentException($"--batch must be >= 1, got {b}");
                }

                return CudaBenchRunner.Run(m, plan, contexts, nDecode, nRuns, b, r.GetValue(fit), asJson);
            }

            if (r.GetValue(batch) != 1 || r.GetValue(fit))
            {
                throw new ArgumentException("--batch and --fit apply to --device cuda only");
            }

            var engines = new List<IBenchEngine>();
            try
            {
                engines.Add(new KvaqBenchEngine(m, plan, nThreads, attention));

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
                    engines.Add(LlamaCppBenchEngineFactory.Create(m.Path, tk, tv, nThreads));
                    llamaCache = $"{tk}/{tv}";
                }

                var results = contexts.Select(c => BenchRunner.Run(engines, c, nDecode, nRuns, PrefillRunsFor(c), m.Config.VocabSize, log)).ToList();
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
                        ["kvaq.peak_rss_bytes"] = kvaqPeak,
                        ["peak_rss_bytes"] = peak,
                        ["contexts"] = results.Select(x => x.ToJson()).ToList(),
                    };
                    CliRunner.PrintJson(report);
                }
                else
                {
                    PrintTable(results, nThreads, kvaqPeak, peak);
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

    private static bool IsGguf(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var fs = File.OpenRead(path);
        return fs.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && magic.SequenceEqual("GGUF"u8);
    }

    private static void PrintTable(List<BenchContextResult> results, int threads, long kvaqPeak, long peak)
    {
        Console.Out.WriteLine($"threads {threads}; medians; peak RSS kvaq alone {kvaqPeak / 1048576.0:F0} MiB, whole run {peak / 1048576.0:F0} MiB");
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
