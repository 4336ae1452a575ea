using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using KvAdaQuant.Allocation;
using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq demo</c>: the paper end to end on one model. Calibration text (sampled from the model, seed 7) is analysed;
/// plans are allocated at the budget of K3V3 (key-favoring, norm-aware on the measured activation norms, sensitivity);
/// FP16, K4V2, K2V4, K3V3 and each plan are evaluated on KL divergence, top-1 agreement and perplexity against the FP32
/// cache on evaluation text sampled from the model with another seed (42); the table is printed and the report written.
/// </summary>
internal static class DemoCommand
{
    /// <summary>The file of <c>--out</c> moved in last: once it is there, so is everything else of the run.</summary>
    public const string ReportFile = "report.md";

    private const string AnalysisFolder = "analysis";

    private static readonly string[] Policies = ["key-favoring", "norm-aware", "sensitivity"];

    /// <summary>Every file <c>demo</c> writes into <c>--out</c>.</summary>
    internal static IEnumerable<string> OutputFiles =>
    [
        .. new[] { AnalysisWriter.JsonFile }.Concat(AnalysisWriter.CsvFiles).Select(f => Path.Combine(AnalysisFolder, f)),
        .. Policies.Select(PlanFile),
        "results.csv",
        "results.json",
        ReportFile,
    ];

    private static string PlanFile(string policy) => $"plan-{policy}.json";

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var outDir = new Option<string>("--out", "-o") { Description = "report folder (report.md is written last; a failed run leaves nothing)", DefaultValueFactory = _ => "demo" };
        var budget = new Option<string>("--budget", "-b") { Description = "budget: bits per element, or a uniform pair meaning its real cost", DefaultValueFactory = _ => "k3v3" };
        var range = new Option<string>("--bit-range") { Description = "widths the policies choose from", DefaultValueFactory = _ => "1,1.58,2,3,4,6,8" };
        var spec = new Option<string>("--spec") { Description = "quantization options of every tensor (--kv syntax)", DefaultValueFactory = _ => string.Empty };
        var ctx = new Option<int>("--ctx") { Description = "evaluation chunk length", DefaultValueFactory = _ => 256 };
        var chunks = new Option<int>("--chunks") { Description = "evaluation chunks of --ctx tokens (0: the evaluator's default, 8 chunks of sampled text)", DefaultValueFactory = _ => 4 };
        var calibTokens = new Option<int>("--calib-tokens") { Description = "calibration tokens", DefaultValueFactory = _ => 128 };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("demo", "The paper end to end: analyse, allocate at budget K3V3 (key-favoring, norm-aware, sensitivity), evaluate FP16, K4V2, K2V4, K3V3 and the plans on KL and perplexity, write the report.")
        {
            model, tokenizer, outDir, budget, range, spec, ctx, chunks, calibTokens, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            int chunkLimit = r.GetValue(chunks);
            if (chunkLimit < 0)
            {
                throw new ArgumentException($"--chunks must be >= 0 (0: the evaluator's default, 8), got {chunkLimit}");
            }

            if (r.GetValue(ctx) < 4)
            {
                throw new ArgumentException($"--ctx must be at least 4 (tokens per evaluation chunk), got {r.GetValue(ctx)}");
            }

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            var cfg = m.Config;
            int evalCtx = Math.Min(r.GetValue(ctx), cfg.ContextLength);
            CalibrationText.CheckTokens(r.GetValue(calibTokens), cfg.ContextLength);
            if ((long)chunkLimit * evalCtx > int.MaxValue)
            {
                throw new ArgumentException($"--chunks {chunkLimit} of --ctx {evalCtx} tokens of sampled text are {(long)chunkLimit * evalCtx} tokens, more than one stream holds ({int.MaxValue})");
            }
            var (kBase, vBase) = AllocateCommand.BaseSpecs(r.GetValue(spec)!, cfg.Layers, cfg.HeadDim);
            var wf = new AllocationWorkflow(cfg.Layers, cfg.KvHeads, cfg.HeadDim, evalCtx, new SpecBitCost(kBase, vBase, cfg.HeadDim, evalCtx), nominal: false, BitRange.Parse(r.GetValue(range)!));
            double b = wf.ParseBudget(r.GetValue(budget)!);

            // A budget below the cheapest width is refused now, with the message each policy would give after the analysis.
            foreach (var policy in Policies)
            {
                wf.CheckBudget(policy, b);
            }

            using var transformer = new Transformer(m, r.GetValue(threads));

            // The folder is checked and made once the options are; the files go to a staging folder inside it and are
            // moved in when all are written, report.md last (a failed or interrupted run leaves nothing).
            using var output = new OutputTransaction();
            string staging = output.PrepareFolder("--out", r.GetValue(outDir)!, OutputFiles);
            string dir = Path.GetFullPath(r.GetValue(outDir)!);
            bool quiet = r.GetValue(json);
            var log = new StringBuilder();
            void Say(string line)
            {
                log.AppendLine(line);
                if (!quiet)
                {
                    Console.Error.WriteLine(line);
                }
            }

            Say($"model {m.Path}: {cfg.Layers} layers, {cfg.KvHeads} KV heads, head dim {cfg.HeadDim}");
            var (calib, calibName) = CalibrationText.Load("sampled", transformer, tok, r.GetValue(calibTokens));
            var analysis = AllocationWorkflow.Analyze(transformer, calib, calibName);
            AnalysisWriter.Write(analysis, Path.Combine(staging, AnalysisFolder));
            var norms = analysis.Norms(NormScore.Frobenius, NormSource.Activations);
            Say($"analysed {calib.Count} calibration tokens ({calibName}) in {sw.Elapsed.TotalSeconds:F1} s; K/V Frobenius by layer: " +
                string.Join(", ", norms.Keys.Select((k, i) => (k / norms.Values[i]).ToString("0.00", CultureInfo.InvariantCulture))));
            Say("channel peak (largest channel norm / RMS channel norm) by layer, K: " +
                string.Join(", ", analysis.Layers.Select(l => l.K.ChannelPeakStats.Mean.ToString("0.00", CultureInfo.InvariantCulture))) + "; V: " +
                string.Join(", ", analysis.Layers.Select(l => l.V.ChannelPeakStats.Mean.ToString("0.00", CultureInfo.InvariantCulture))));

            SensitivityProfile profile = null!;
            var results = new List<EvaluationRow>();
            var evaluator = new TaskEvaluator(transformer, tok, new EvaluationOptions { Task = "kl", Data = "sampled", Seed = 42, Context = evalCtx, Limit = chunkLimit });
            var configs = new List<EvalCommand.Config>();
            string userSpec = string.IsNullOrWhiteSpace(r.GetValue(spec)) ? string.Empty : ":" + r.GetValue(spec)!.Trim().TrimStart(':');
            foreach (var name in new[] { "fp16", "k4v2", "k2v4", "k3v3" })
            {
                var p = KvPlan.Parse(name + (name == "fp16" ? string.Empty : userSpec), cfg.Layers);
                configs.Add(new EvalCommand.Config(name.ToUpperInvariant(), p, null, null));
            }

            // Beyond the paper: the key-favouring split with rotated rows (rot), where the head allows it and --spec has not rotated already.
            var rotated = KvPlan.Parse("k4v2" + userSpec, cfg.Layers);
            if (KvRotation.Supports(cfg.HeadDim) && !rotated.Layers[0].K.Rotate && !rotated.Layers[0].V.Rotate)
            {
                configs.Add(new EvalCommand.Config("K4V2:rot", KvPlan.Parse("k4v2" + userSpec + ":rot", cfg.Layers), null, null));
            }

            var planFiles = new List<string>();
            CliProgress.Run(quiet, task =>
            {
                var sens = task("sensitivity (calibration)");
                profile = wf.Sensitivity(transformer, calib, calib.Count, calibName, sens);
                foreach (var policy in Policies)
                {
                    var a = wf.Allocate(policy, b, null, () => norms, () => profile, 32, [8, 16, 32]);
                    string planName = $"{policy} @{r.GetValue(budget)}";
                    string desc = string.Create(CultureInfo.InvariantCulture, $"kvaq demo: policy {policy}; budget {r.GetValue(budget)} = {b:0.####} real bits/element; bit range {wf.Range}; inputs: {(policy == "sensitivity" ? profile.Source : policy == "norm-aware" ? norms.Source : "none")}; achieved {wf.RealAverage(a):0.####}; {a}");
                    string file = Path.Combine(staging, PlanFile(policy));
                    File.WriteAllText(file, wf.PlanJson(a, planName, desc));
                    planFiles.Add(file);
                    configs.Add(new EvalCommand.Config(planName, KvPlan.Load(file), null, null));
                    Say($"{policy}: {a}");
                }

                var report = task($"kl + perplexity: {configs.Count} caches");
                evaluator.TextTokens();
                for (int i = 0; i < configs.Count; i++)
                {
                    var c = configs[i];
                    int done = i;
                    double avg = c.Plan.AverageBits(cfg.KvHeads, cfg.HeadDim, evalCtx);
                    try
                    {
                        var res = evaluator.Evaluate(l => KvCacheFactory.Create(c.Plan, l), (d, n) => report(done + ((double)d / n), configs.Count));
                        results.Add(new EvaluationRow(c.Name, null, null, avg, res));
                    }
                    catch (KvCacheException e)
                    {
                        results.Add(new EvaluationRow(c.Name, null, null, avg, new EvaluationResult(new Dictionary<string, double>(), 0, 0), e.Message));
                    }

                    report(i + 1, configs.Count);
                }
            });

            // The chunks evaluated: KlReference cuts the text into at most Limit (0: no limit) whole chunks of evalCtx tokens.
            int chunksUsed = Math.Min(evaluator.TextTokens().Count / evalCtx, chunkLimit > 0 ? chunkLimit : int.MaxValue);
            var table = new EvaluationTable(m.Path, "kl", evaluator.DataDescription, results);
            File.WriteAllText(Path.Combine(staging, "results.csv"), table.ToCsv());
            File.WriteAllText(Path.Combine(staging, "results.json"), table.ToJson());
            var md = new StringBuilder();
            md.AppendLine("# kvaq demo").AppendLine();
            md.AppendLine(CultureInfo.InvariantCulture, $"Model `{m.Path}`; budget {r.GetValue(budget)} = {b:0.####} real bits per element (scales and zero points included) at {evalCtx} tokens; base spec K `{kBase}`, V `{vBase}`.").AppendLine();
            md.AppendLine(CultureInfo.InvariantCulture, $"Evaluation text: {evaluator.DataDescription}, {chunksUsed} chunks of {evalCtx} tokens, second half of each scored; reference: the FP32 cache.").AppendLine();
            md.AppendLine(table.ToMarkdown());
            md.AppendLine("## Log").AppendLine().AppendLine("```").Append(log).AppendLine("```");
            md.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Plans: {string.Join(", ", planFiles.Select(Path.GetFileName))}; analysis: analysis/analysis.json; total {sw.Elapsed.TotalSeconds:F1} s.");
            File.WriteAllText(Path.Combine(staging, ReportFile), md.ToString());
            output.Commit(ReportFile);
            if (quiet)
            {
                Console.Out.WriteLine(table.ToJson());
            }
            else
            {
                Console.Out.WriteLine();
                Console.Out.WriteLine($"KL and perplexity vs the FP32 cache on {evaluator.DataDescription}:");
                Console.Out.WriteLine();
                Console.Out.Write(table.ToMarkdown());
                Console.Out.WriteLine();
                Console.Out.WriteLine($"report: {Path.Combine(dir, ReportFile)} ({sw.Elapsed.TotalSeconds:F1} s)");
            }

            return 0;
        }));
        return cmd;
    }
}
