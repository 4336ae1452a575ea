using System.CommandLine;
using System.Globalization;
using KvAdaQuant.Allocation;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq allocate</c>: statistics and a bit budget in, a per-layer K/V plan out.</summary>
internal static class AllocateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = $"model (file, folder or name); default {ModelPaths.DefaultModel}, or none when --stats holds the reference's norms and --head-dim is given" };
        var tokenizer = CommonOptions.Tokenizer();
        var budget = new Option<string?>("--budget", "-b") { Description = "average bits per cached element, real accounting by default (scales, zero points, residual, sinks included), or a uniform pair such as k3v3 meaning its cost" };
        var range = new Option<string>("--bit-range") { Description = "widths to choose from", DefaultValueFactory = _ => "1,1.58,2,3,4,6,8" };
        var policy = new Option<string>("--policy", "-p") { Description = $"one of {string.Join(", ", AllocationWorkflow.Policies)}", DefaultValueFactory = _ => "norm-aware" };
        var stats = new Option<string?>("--stats") { Description = "analysis.json from kvaq analyze, or the reference's norms file ({\"w_k\": [...], \"w_v\": [...]}); default: analyse --calib now" };
        var calib = new Option<string>("--calib") { Description = "calibration text for the analysis and the sensitivity policy: a file, or 'sampled' (text sampled from the model, seed 7)", DefaultValueFactory = _ => "sampled" };
        var calibTokens = new Option<int>("--calib-tokens") { Description = "calibration tokens", DefaultValueFactory = _ => 128 };
        var outFile = new Option<string?>("--out", "-o") { Description = "write the plan JSON here (loadable with --kv-plan); its folder must exist; a failed run writes nothing" };
        var score = new Option<string>("--score") { Description = "frobenius or spectral", DefaultValueFactory = _ => "frobenius" };
        var normSource = new Option<string>("--norm-source") { Description = "activations (measured K/V) or weights (W_K/W_V, as the reference)", DefaultValueFactory = _ => "activations" };
        var spec = new Option<string>("--spec") { Description = "quantization options every tensor gets, in the --kv option syntax (e.g. g64:r64:sym); widths come from the policy", DefaultValueFactory = _ => string.Empty };
        var ctx = new Option<int>("--ctx") { Description = "context at which the real cost is counted (0 = the model's context length)", DefaultValueFactory = _ => 0 };
        var accounting = new Option<string>("--accounting") { Description = "real (bytes the cache stores) or nominal (the reference's: bits only)", DefaultValueFactory = _ => "real" };
        var fixedPair = new Option<string?>("--fixed") { Description = "the pair for --policy fixed, e.g. k4v2" };
        var groupBudget = new Option<int>("--group-budget") { Description = "group-aware: target average group size", DefaultValueFactory = _ => 32 };
        var groupSizes = new Option<string>("--group-sizes") { Description = "group-aware: allowed group sizes", DefaultValueFactory = _ => "8,16,32" };
        var headDim = new Option<int>("--head-dim") { Description = "without a model: head dimension for the real accounting", DefaultValueFactory = _ => 128 };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("allocate", "Turn per-layer statistics and a bit budget into a per-layer K/V bit plan.")
        {
            model, tokenizer, budget, range, policy, stats, calib, calibTokens, outFile, score, normSource, spec, ctx, accounting, fixedPair, groupBudget, groupSizes, headDim, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            // --out is checked before any work; the plan goes to PLAN.partial, renamed when written (a failed run leaves nothing).
            string? outPath = r.GetValue(outFile) is { } o ? OutputTransaction.CheckFile("--out", o, "plan.json") : null;
            using var output = new OutputTransaction();
            string pol = r.GetValue(policy)!.Trim().ToLowerInvariant();

            // Options of one policy given with another would be ignored: refused instead.
            foreach (var (option, owner) in new (Option, string)[] { (fixedPair, "fixed"), (groupBudget, "group-aware"), (groupSizes, "group-aware") })
            {
                if (r.GetResult(option) is { Implicit: false } && pol != owner && AllocationWorkflow.Policies.Contains(pol))
                {
                    throw new ArgumentException($"{option.Name} applies only to --policy {owner} (the policy is {pol})");
                }
            }

            var sc = ParseScore(r.GetValue(score)!);
            var src = ParseSource(r.GetValue(normSource)!);
            string? statsPath = r.GetValue(stats);
            string? modelName = r.GetValue(model);
            if (modelName is null && statsPath is null)
            {
                modelName = ModelPaths.DefaultModel;
            }

            using var m = modelName is null ? null : ModelLoader.Load(modelName, r.GetValue(tokenizer));
            LayerNorms? loaded = statsPath is null ? null : LayerNormsReader.Read(statsPath, sc, src);
            int layers = m?.Config.Layers ?? loaded!.Layers;
            int kvHeads = m?.Config.KvHeads ?? 1;
            if (m is not null && r.GetResult(headDim) is { Implicit: false })
            {
                throw new ArgumentException($"--head-dim applies only without a model (--stats with the reference's norms); the model {m.Path} has head dimension {m.Config.HeadDim}");
            }

            if (m is null && r.GetValue(headDim) is var d && (d <= 0 || d % 8 != 0))
            {
                throw new ArgumentException($"--head-dim must be a positive multiple of 8 (quantized caches pack 8 values at a time), got {d}");
            }

            int hd = m?.Config.HeadDim ?? r.GetValue(headDim);
            if (r.GetValue(ctx) < 0)
            {
                throw new ArgumentException($"--ctx must be >= 0 (0 = the model's context length), got {r.GetValue(ctx)}");
            }

            if (m is not null && r.GetValue(ctx) > m.Config.ContextLength)
            {
                throw new ArgumentException($"--ctx must be in 0..{m.Config.ContextLength} (0 = the model's context length), got {r.GetValue(ctx)}");
            }

            int context = r.GetValue(ctx) is > 0 and var c ? c : m?.Config.ContextLength ?? 4096;
            var (kBase, vBase) = BaseSpecs(r.GetValue(spec)!, layers, hd);
            string acc = r.GetValue(accounting)!.Trim().ToLowerInvariant();
            if (acc is not ("real" or "nominal"))
            {
                throw new ArgumentException($"--accounting '{acc}': expected real or nominal");
            }

            var wf = new AllocationWorkflow(layers, kvHeads, hd, context, new SpecBitCost(kBase, vBase, hd, context), acc == "nominal", BitRange.Parse(r.GetValue(range)!));
            string? budgetText = r.GetValue(budget);
            if (budgetText is null && pol != "fixed")
            {
                throw new ArgumentException($"--budget is required for --policy {pol}");
            }

            double b = budgetText is null ? double.NaN : wf.ParseBudget(budgetText);
            if (budgetText is not null)
            {
                // A budget below the cheapest width is refused now, with the policy's message, not after the norms or the sensitivity are measured.
                wf.CheckBudget(pol, b);
            }

            using var transformer = m is null ? null : new Transformer(m, r.GetValue(threads));
            (IReadOnlyList<int> Tokens, string Name)? calibration = null;
            (IReadOnlyList<int>, string) Calib() => calibration ??= CalibrationText.Load(r.GetValue(calib)!, transformer ?? throw new ArgumentException("--model is needed to measure on calibration text"), m!.Tokenizer ?? throw new ArgumentException("--tokenizer: none found"), r.GetValue(calibTokens));
            var sizes = r.GetValue(groupSizes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => int.TryParse(s, CultureInfo.InvariantCulture, out int g) ? g : throw new ArgumentException($"--group-sizes: '{s}' is not an integer")).ToArray();
            string normsFrom = string.Empty;
            var allocation = wf.Allocate(
                pol,
                b,
                r.GetValue(fixedPair),
                () =>
                {
                    var n = loaded ?? AllocationWorkflow.Norms(null, sc, src, transformer, () => Calib().Item1, Calib().Item2);
                    normsFrom = n.Source;
                    return n;
                },
                () =>
                {
                    var (t, name) = Calib();
                    SensitivityProfile p = null!;
                    CliProgress.Run(r.GetValue(json), task =>
                    {
                        var report = task("sensitivity: KL per layer, K/V and width");
                        p = wf.Sensitivity(transformer!, t, t.Count, name, report);
                    });
                    normsFrom = p.Source;
                    return p;
                },
                r.GetValue(groupBudget),
                sizes);
            // Key-favoring gives K = V only when no pair with K > V fits (one width in the range, or a budget below the cheapest pair).
            string? note = pol == "key-favoring" && allocation.KeyBits.SequenceEqual(allocation.ValueBits)
                ? $"no pair with K > V over widths {wf.Range} fits the budget, so key-favoring gives K = V = {BitAllocation.Format(allocation.KeyBits[0])} (the widest uniform width within it)"
                : null;
            string name = $"{pol}-{(budgetText ?? r.GetValue(fixedPair))}";
            double real = wf.RealAverage(allocation);
            double nominal = allocation.AverageBits(new NominalBitCost());
            string description = string.Create(
                CultureInfo.InvariantCulture,
                $"kvaq allocate: policy {pol}; budget {budgetText ?? "none"} ({(double.IsNaN(b) ? "-" : b.ToString("0.####", CultureInfo.InvariantCulture))} bits/element, {wf.Cost.Name} accounting); bit range {wf.Range}; base spec K {kBase}, V {vBase}; " +
                $"score {sc.ToString().ToLowerInvariant()}, norm source {src.ToString().ToLowerInvariant()}; inputs: {(normsFrom.Length > 0 ? normsFrom : "none")}; model {m?.Path ?? "none"}; " +
                $"achieved: {real:0.####} real bits/element at {context} tokens (nominal {nominal:0.####}); {allocation}{(note is null ? string.Empty : "; " + note)}");
            string planJson = wf.PlanJson(allocation, name, description);
            if (outPath is not null)
            {
                File.WriteAllText(output.Temporary(outPath), planJson);
                output.Commit();
            }

            if (r.GetValue(json))
            {
                CliRunner.PrintJson(new
                {
                    Policy = pol,
                    Budget = budgetText,
                    BudgetBits = double.IsNaN(b) ? (double?)null : b,
                    Accounting = wf.Cost.Name,
                    BitRange = wf.Range.Widths,
                    KBits = allocation.KeyBits,
                    VBits = allocation.ValueBits,
                    KGroups = allocation.KeyGroups,
                    VGroups = allocation.ValueGroups,
                    AverageBitsReal = real,
                    AverageBitsNominal = nominal,
                    Context = context,
                    Inputs = normsFrom,
                    Plan = outPath,
                    Note = note,
                });
            }
            else
            {
                Console.Out.WriteLine($"{pol}: {allocation}");
                if (note is not null)
                {
                    Console.Out.WriteLine($"note: {note}");
                }

                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"average {real:0.####} real bits per element at {context} tokens (nominal {nominal:0.####}); budget {(double.IsNaN(b) ? "-" : b.ToString("0.####", CultureInfo.InvariantCulture))} ({wf.Cost.Name})"));
                if (outPath is not null)
                {
                    Console.Out.WriteLine($"plan written to {outPath}");
                }
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>The base K and V specs: the --spec options applied to a k4v4 plan (the widths are replaced per tensor).</summary>
    public static (KvSpec K, KvSpec V) BaseSpecs(string spec, int layers, int headDim)
    {
        string text = string.IsNullOrWhiteSpace(spec) ? "k4v4" : "k4v4:" + spec.Trim().TrimStart(':');

        // The --kv parser names its input "--kv 'k4v4:<spec>'"; the user gave --spec, so its errors are renamed.
        string Renamed(ArgumentException e)
        {
            string inner = $"--kv '{text}': ";
            string message = e.Message.StartsWith(inner, StringComparison.Ordinal) ? e.Message[inner.Length..] : e.Message;
            return string.IsNullOrWhiteSpace(spec) ? message : $"--spec '{spec}': {message}";
        }

        try
        {
            var plan = KvPlan.Parse(text, layers);
            plan.Validate(layers, headDim);
            return (plan.Layers[0].K, plan.Layers[0].V);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException(Renamed(e), e);
        }
    }

    public static NormScore ParseScore(string s) => s.Trim().ToLowerInvariant() switch
    {
        "frobenius" or "fro" => NormScore.Frobenius,
        "spectral" => NormScore.Spectral,
        _ => throw new ArgumentException($"--score '{s}': expected frobenius or spectral"),
    };

    public static NormSource ParseSource(string s) => s.Trim().ToLowerInvariant() switch
    {
        "activations" => NormSource.Activations,
        "weights" => NormSource.Weights,
        _ => throw new ArgumentException($"--norm-source '{s}': expected activations or weights"),
    };
}
