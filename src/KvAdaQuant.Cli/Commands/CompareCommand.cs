using System.CommandLine;
using KvAdaQuant.Cli.Bench;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq compare</c>: perplexity of one GGUF model under several kvaq KV caches (<c>--kv</c> specs, <c>--kv-plan</c> files) next to llama.cpp's own cache types,
/// on the same tokens and chunks (llama.cpp's method), as one table.
/// </summary>
internal static class CompareCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var data = CommonOptions.TextData();
        var ctx = CommonOptions.ChunkContext();
        var chars = CommonOptions.Chars();
        var chunks = CommonOptions.Chunks();
        var kv = new Option<string>("--kv") { Description = "comma-separated kvaq caches, e.g. fp32,k8v8,k4v4 (empty: none; not both empty)", DefaultValueFactory = _ => "fp32,k8v8,k4v4" };
        var kvPlan = new Option<string?>("--kv-plan") { Description = "comma-separated JSON plan files (a.json,b.json; see the README), further kvaq rows after the --kv ones, each named after its plan and file" };
        var vsCache = new Option<string>("--vs-cache") { Description = "comma-separated llama.cpp cache types, TYPE or K/V from f32, f16, q8_0, q4_0 (empty: none)", DefaultValueFactory = _ => "f32,q8_0,q4_0" };
        var threads = CommonOptions.Threads(2, "threads for both engines (0 = all cores)");
        var json = CommonOptions.Json();
        var cmd = new Command("compare", "Perplexity table: kvaq KV caches next to llama.cpp's cache types on the same GGUF file, tokens and chunks.")
        {
            model, tokenizer, data, ctx, chars, chunks, kv, kvPlan, vsCache, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var specs = Split(r.GetValue(kv)!);
            var llamaTypes = Split(r.GetValue(vsCache)!);
            // Plan files are read before the model loads; they are checked against its shape with the --kv specs, before any row runs.
            var plans = CommonOptions.LoadPlanList(r.GetValue(kvPlan));
            if (specs.Length == 0 && plans.Count == 0 && llamaTypes.Length == 0)
            {
                throw new ArgumentException("--kv and --vs-cache are both empty and no --kv-plan is given: nothing to compare");
            }

            int chunkLimit = r.GetValue(chunks);
            if (chunkLimit < 0)
            {
                throw new ArgumentException($"--chunks must be >= 0 (0 = all), got {chunkLimit}");
            }

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var caches = specs.Select(s => (Cache: s, Plan: KvPlan.Parse(s, m.Config.Layers), PlanFile: (string?)null))
                .Concat(plans.Select(p => (Cache: p.Plan.Name, p.Plan, PlanFile: (string?)p.Path)))
                .ToList();
            foreach (var c in caches)
            {
                c.Plan.Validate(m.Config.Layers, m.Config.HeadDim);
            }

            var tok = m.Tokenizer ?? (Formats.Gguf.GgufFile.IsGgufFile(m.Path) ? GgufTokenizer(m.Path) : null)
                ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            var path = ModelPaths.ResolveData(r.GetValue(data)!);
            var text = DatasetReader.ReadText(path);
            int nChars = r.GetValue(chars);
            if (nChars < 0)
            {
                throw new ArgumentException($"--chars must be >= 0, got {nChars}");
            }

            if (nChars > 0 && nChars < text.Length)
            {
                text = text[..nChars];
            }

            if (text.Length == 0)
            {
                throw new ArgumentException($"--data {path}: the text is empty");
            }

            int n = r.GetValue(ctx);
            foreach (var c in caches)
            {
                CommonOptions.NoteIfNeverQuantized(c.Plan, n);
            }

            int nThreads = r.GetValue(threads) is > 0 and var t ? t : Environment.ProcessorCount;
            int maxChunks = chunkLimit > 0 ? chunkLimit : int.MaxValue;
            if (llamaTypes.Length > 0 && !Formats.Gguf.GgufFile.IsGgufFile(m.Path))
            {
                throw new ArgumentException($"--vs-cache: {m.Path} is not a GGUF file; llama.cpp needs the same model as GGUF (kvaq convert)");
            }

            var tokens = tok.Encode(text, addBos: true);
            // kv_plan: the plan file of a --kv-plan row, null for the --kv and llama.cpp rows.
            var rows = new List<Dictionary<string, object?>>();
            using var transformer = new Transformer(m, nThreads);
            foreach (var c in caches)
            {
                var res = PerplexityEvaluator.Evaluate(transformer, tokens, n, layout => KvCacheFactory.Create(c.Plan, layout), tok.BosToken, null, maxChunks);
                rows.Add(new() { ["engine"] = "kvaq", ["cache"] = c.Cache, ["kv_plan"] = c.PlanFile, ["perplexity"] = res.Perplexity, ["perplexity_uncertainty"] = res.PerplexityUncertainty, ["tokens_scored"] = res.TokensScored });
            }

            foreach (var type in llamaTypes)
            {
                var (k, v) = LlamaCppCacheMatch.Parse(type);
                var res = LlamaCppPerplexityRunner.Run(m.Path, tokens, n, k, v, nThreads, maxChunks);
                rows.Add(new() { ["engine"] = "llama.cpp", ["cache"] = res.Cache, ["kv_plan"] = null, ["perplexity"] = res.Perplexity, ["perplexity_uncertainty"] = res.Uncertainty, ["tokens_scored"] = res.TokensScored });
            }

            if (r.GetValue(json))
            {
                CliRunner.PrintJson(new Dictionary<string, object>
                {
                    ["model"] = m.Path,
                    ["data"] = path,
                    ["chars"] = text.Length,
                    ["text_tokens"] = tokens.Count,
                    ["ctx"] = n,
                    ["rows"] = rows,
                });
            }
            else
            {
                Console.Out.WriteLine($"{m.Path}: {text.Length} characters of {path}, {tokens.Count} tokens, chunks of {n}");
                Console.Out.WriteLine("| engine | KV cache | perplexity (+/- standard error) | tokens scored |");
                Console.Out.WriteLine("|---|---|---|---|");
                foreach (var row in rows)
                {
                    string cache = row["kv_plan"] is string file ? $"{row["cache"]} (--kv-plan {file})" : (string)row["cache"]!;
                    Console.Out.WriteLine($"| {row["engine"]} | {cache} | {(double)row["perplexity"]!:F4} +/- {(double)row["perplexity_uncertainty"]!:F4} | {row["tokens_scored"]} |");
                }
            }

            return 0;
        }));
        return cmd;
    }

    private static string[] Split(string list) => list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static Tokenization.ITokenizer GgufTokenizer(string path)
    {
        using var file = Formats.Gguf.GgufFile.Open(path);
        return Tokenization.GgufTokenizerFactory.Create(file);
    }
}
