using System.CommandLine;
using System.Globalization;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq eval</c>: one task over one or many KV caches (a plan, a K x V grid, plan files), as a table, CSV, JSON and a heat map.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var task = new Option<string>("--task") { Description = $"one of {string.Join(", ", EvaluationOptions.Tasks)}", Required = true };
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var grid = new Option<string?>("--grid") { Description = "evaluate every pair, e.g. k1,2,4,8xv1,2,4,8 (with --spec options)" };
        var plans = new Option<string?>("--plans") { Description = "compare plan files, comma-separated (a.json,b.json)" };
        var spec = new Option<string>("--spec") { Description = "options appended to every --grid pair, in the --kv syntax (e.g. g32:sym)", DefaultValueFactory = _ => string.Empty };
        var limit = new Option<int>("--limit", "-n") { Description = "items to evaluate (chunks for perplexity and kl); 0 = all", DefaultValueFactory = _ => 0 };
        var seed = new Option<ulong>("--seed") { Description = "seed of model-sampled text (--data sampled)", DefaultValueFactory = _ => 42 };
        var data = new Option<string?>("--data", "-f") { Description = "data file, or wikitext-2 / ptb / c4 / sampled (text sampled from the model; in-distribution) for perplexity and kl" };
        var ctx = new Option<int>("--ctx", "-c") { Description = "context window (tokens per chunk for perplexity and kl); 0 = the model's whole context for gsm8k, 256 for the other tasks", DefaultValueFactory = _ => 0 };
        var shots = new Option<int>("--shots") { Description = "gsm8k few-shot examples (the first N test problems; fewer when they do not fit)", DefaultValueFactory = _ => 5 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "gsm8k generation limit; 0 = 256, at most half the context", DefaultValueFactory = _ => 0 };
        var outDir = new Option<string?>("--out", "-o") { Description = "write results.md, results.csv, heatmap.png/.svg for a grid, and results.json last, here (a failed run leaves nothing)" };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("eval", "Evaluate KV caches on a task: perplexity, KL vs the unquantized cache, multiple choice, LAMBADA, GSM8K.")
        {
            model, tokenizer, task, kv, kvPlan, grid, plans, spec, limit, seed, data, ctx, shots, maxTokens, outDir, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            // The output folder is checked (and made) before the evaluation, not after it has run; the files go to a
            // staging folder inside it and are moved in when all are written (a failed or interrupted run leaves nothing).
            string taskName = r.GetValue(task)!.Trim().ToLowerInvariant();
            bool heatmap = r.GetValue(grid) is not null;
            using var output = new OutputTransaction();
            string? staging = r.GetValue(outDir) is { } dir ? output.PrepareFolder("--out", dir, OutputFiles(taskName, heatmap)) : null;
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            var options = new EvaluationOptions
            {
                Task = taskName,
                Data = r.GetValue(data),
                Context = r.GetValue(ctx),
                Limit = r.GetValue(limit),
                Seed = r.GetValue(seed),
                Shots = r.GetValue(shots),
                MaxNewTokens = r.GetValue(maxTokens),
            };
            // Options that the task would ignore are errors, not silently dropped.
            if (options.Task != "gsm8k")
            {
                foreach (var o in new Option[] { shots, maxTokens })
                {
                    if (r.GetResult(o) is { Implicit: false })
                    {
                        throw new ArgumentException($"{o.Name} applies only to --task gsm8k");
                    }
                }
            }

            if (r.GetResult(seed) is { Implicit: false } && !TaskEvaluator.IsSampledName(options.Data))
            {
                throw new ArgumentException("--seed applies only to --data sampled (text sampled from the model for perplexity and kl)");
            }

            using var transformer = new Transformer(m, r.GetValue(threads));
            var configs = Configs(r.GetValue(kv), r.GetValue(kvPlan), r.GetValue(grid), r.GetValue(plans), r.GetValue(spec)!, m.Config.Layers, m.Config.HeadDim);
            var evaluator = new TaskEvaluator(transformer, tok, options);
            foreach (var c in configs)
            {
                CommonOptions.NoteIfNeverQuantized(c.Plan, evaluator.Options.Context);
            }

            var table = Run(evaluator, configs, m.Path, m.Config.KvHeads, m.Config.HeadDim, r.GetValue(json));
            if (staging is not null)
            {
                Write(table, options, staging, heatmap);
                output.Commit(SummaryFile);
            }

            Print(table, r.GetValue(json));
            return 0;
        }));
        return cmd;
    }

    /// <summary>A named plan to evaluate, with its widths when uniform (grid cells).</summary>
    public sealed record Config(string Name, KvPlan Plan, double? KeyBits, double? ValueBits);

    /// <summary>The caches the options ask for, in order: --kv/--kv-plan, the grid, the plan files; fp32 when none.</summary>
    public static List<Config> Configs(string? kv, string? kvPlan, string? grid, string? plans, string spec, int layers, int headDim)
    {
        var list = new List<Config>();
        if (grid is null && !string.IsNullOrWhiteSpace(spec))
        {
            throw new ArgumentException($"--spec applies only to --grid pairs (for one cache put '{spec}' in --kv, e.g. --kv k4v2:{spec.Trim().TrimStart(':')})");
        }

        if (kv is not null || kvPlan is not null || (grid is null && plans is null))
        {
            var p = KvCacheFactory.ResolvePlan(kv, kvPlan, layers);
            list.Add(new Config(p.Name, p, null, null));
        }

        if (grid is not null)
        {
            var (ks, vs) = ParseGrid(grid);
            string opts = string.IsNullOrWhiteSpace(spec) ? string.Empty : ":" + spec.Trim().TrimStart(':');
            foreach (var k in ks)
            {
                foreach (var v in vs)
                {
                    string name = $"k{BitName(k)}v{BitName(v)}";
                    list.Add(new Config(name, GridPlan(name, opts, spec, layers, headDim), k, v));
                }
            }
        }

        if (plans is not null)
        {
            var paths = plans.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (paths.Length == 0)
            {
                throw new ArgumentException($"--plans '{plans}': no plan files (expected a.json,b.json)");
            }

            foreach (var path in paths)
            {
                var p = KvPlan.Load(path, "--plans");
                list.Add(new Config(p.Name, p, null, null));
            }
        }

        foreach (var c in list)
        {
            c.Plan.Validate(layers, headDim);
        }

        return list;
    }

    /// <summary>The plan of one --grid pair with the --spec options, checked; errors name --grid and --spec, not --kv.</summary>
    private static KvPlan GridPlan(string pair, string opts, string spec, int layers, int headDim)
    {
        string inner = $"--kv '{pair}{opts}': ";
        try
        {
            var plan = KvPlan.Parse(pair + opts, layers);
            plan.Validate(layers, headDim);
            return plan;
        }
        catch (ArgumentException e) when (e.Message.StartsWith(inner, StringComparison.Ordinal))
        {
            throw new ArgumentException($"--grid pair {pair} with --spec '{spec}': {e.Message[inner.Length..]}", e);
        }
    }

    /// <summary>Parses <c>k1,2,4,8xv1,2,4,8</c>.</summary>
    public static (double[] K, double[] V) ParseGrid(string grid)
    {
        var m = System.Text.RegularExpressions.Regex.Match(grid.Trim().ToLowerInvariant(), @"^k([0-9.,]+)xv([0-9.,]+)$");
        if (!m.Success)
        {
            throw new ArgumentException($"--grid '{grid}': expected k<bits,...>xv<bits,...>, e.g. k1,2,4,8xv1,2,4,8");
        }

        double[] Parse(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(x =>
        {
            var bits = KvBitsInfo.TryParse(x) ?? throw new ArgumentException($"--grid '{grid}': width '{x}' is not one of {KvBitsInfo.Accepted}");
            return bits.NominalBits();
        }).Distinct().ToArray();
        var (k, v) = (Parse(m.Groups[1].Value), Parse(m.Groups[2].Value));
        if (k.Length == 0 || v.Length == 0)
        {
            throw new ArgumentException($"--grid '{grid}': no {(k.Length == 0 ? "key" : "value")} widths (expected k<bits,...>xv<bits,...>, e.g. k1,2,4,8xv1,2,4,8)");
        }

        return (k, v);
    }

    /// <summary>Evaluates every config with a progress bar (configs x items, with ETA).</summary>
    public static EvaluationTable Run(TaskEvaluator evaluator, IReadOnlyList<Config> configs, string model, int kvHeads, int headDim, bool quiet)
    {
        var rows = new List<EvaluationRow>();
        CliProgress.Run(quiet, task =>
        {
            var report = task($"{evaluator.Options.Task}: {configs.Count} cache(s)");
            for (int i = 0; i < configs.Count; i++)
            {
                var c = configs[i];
                int done = i;
                double avg = c.Plan.AverageBits(kvHeads, headDim, evaluator.Options.Context);
                try
                {
                    var result = evaluator.Evaluate(l => KvCacheFactory.Create(c.Plan, l), (d, n) => report(done + ((double)d / n), configs.Count));
                    rows.Add(new EvaluationRow(c.Name, c.KeyBits, c.ValueBits, avg, result));
                }
                catch (KvCacheException e) when (configs.Count > 1)
                {
                    // One cache refusing (non-finite values) must not lose the rest of a grid; the row says why.
                    rows.Add(new EvaluationRow(c.Name, c.KeyBits, c.ValueBits, avg, new EvaluationResult(new Dictionary<string, double>(), 0, 0), e.Message));
                }

                report(i + 1, configs.Count);
            }
        });
        return new EvaluationTable(model, evaluator.Options.Task, evaluator.DataDescription, rows);
    }

    /// <summary>The file of <c>--out</c> moved in last: once it is there, so is everything else of the run.</summary>
    public const string SummaryFile = "results.json";

    /// <summary>The files <see cref="Write"/> writes into <c>--out</c>.</summary>
    public static IEnumerable<string> OutputFiles(string task, bool heatmap)
    {
        string[] files = ["results.md", "results.csv", SummaryFile];
        string[] maps = task == "kl" ? ["heatmap.png", "heatmap.svg", "heatmap_perplexity.png", "heatmap_perplexity.svg"] : ["heatmap.png", "heatmap.svg"];
        return heatmap ? [.. files, .. maps] : files;
    }

    /// <summary>Writes the table as markdown, CSV and JSON (and the heat maps of a grid) into <paramref name="dir"/>.</summary>
    public static void Write(EvaluationTable table, EvaluationOptions options, string dir, bool heatmap)
    {
        File.WriteAllText(Path.Combine(dir, "results.md"), $"{table.Task} on {table.Data}\n\n{table.ToMarkdown()}");
        File.WriteAllText(Path.Combine(dir, "results.csv"), table.ToCsv());
        File.WriteAllText(Path.Combine(dir, SummaryFile), table.ToJson());
        if (heatmap)
        {
            var (metric, _) = options.PrimaryMetric;
            GridHeatmap.Write(table, metric, dir, "heatmap");
            if (options.Task == "kl")
            {
                GridHeatmap.Write(table, "perplexity", dir, "heatmap_perplexity");
            }
        }
    }

    /// <summary>Prints the table (or JSON).</summary>
    public static void Print(EvaluationTable table, bool json)
    {
        if (json)
        {
            Console.Out.WriteLine(table.ToJson());
        }
        else
        {
            Console.Out.WriteLine($"{table.Task} on {table.Data}");
            Console.Out.WriteLine();
            Console.Out.Write(table.ToMarkdown());
        }
    }

    private static string BitName(double b) => b.ToString("0.##", CultureInfo.InvariantCulture);
}
