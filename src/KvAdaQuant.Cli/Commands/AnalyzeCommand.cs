using System.CommandLine;
using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.Quantization;
using KvAdaQuant.Tokenization;
using Spectre.Console;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq analyze</c>: K/V spectra, norms, quantization error and error propagation, as JSON, CSV, plots and an HTML report.</summary>
internal static class AnalyzeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var data = new Option<string>("--data", "-f") { Description = "calibration text file (a path, or relative to ../shared/data)", Required = true };
        var tokens = new Option<int>("--tokens", "-n") { Description = "calibration tokens: BOS then the tokenized text, truncated to N", DefaultValueFactory = _ => 512 };
        var bits = new Option<string>("--kv-bits") { Description = "bit widths for quantization error and propagation, comma-separated, from 1, 1.58, 2, 3, 4, 5, 6, 8 (empty: none)", DefaultValueFactory = _ => "1,2,3,4,8" };
        var group = new Option<int?>("--group") { Description = "elements per quantization group: channels along head_dim per token, or tokens per channel with --axis channel (default: 32, or the whole head when smaller)" };
        var axis = new Option<string>("--axis") { Description = "quantization groups: token (along head_dim of each token, as the paper) or channel (along tokens of each channel, as KIVI for keys)", DefaultValueFactory = _ => "token" };
        var symmetric = new Option<bool>("--symmetric") { Description = "symmetric quantization (scale only) instead of asymmetric min/max" };
        var rotate = new Option<bool>("--rotate") { Description = "rotate each head's rows (the rot spec option: a fixed Walsh-Hadamard transform) before quantizing, for the quantization error and propagation" };
        var outDir = new Option<string>("--out", "-o") { Description = "output folder (report.html is written last; a failed run leaves nothing)", DefaultValueFactory = _ => "analysis" };
        var emulated = new Option<bool>("--emulated-cache") { Description = "only-K/only-V runs use the analysis's round-trip cache (FP32 rows after quantize-dequantize, max-subtracted softmax) instead of the library's quantized cache" };
        var skipTop = new Option<int>("--skip-top") { Description = "leave the N largest singular values out of the spectrum figure", DefaultValueFactory = _ => 0 };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("analyze", "Capture K and V on calibration text; singular values, norms, weight norms, quantization error and error propagation; JSON, CSV, plots and report.html.")
        {
            model, tokenizer, data, tokens, bits, group, axis, symmetric, rotate, emulated, outDir, skipTop, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            int n = r.GetValue(tokens);
            var bitList = ParseBits(r.GetValue(bits) ?? string.Empty);
            int skip = r.GetValue(skipTop);
            if (skip < 0)
            {
                throw new ArgumentException($"--skip-top must be >= 0, got {skip}");
            }

            var quantAxis = r.GetValue(axis) switch
            {
                "token" => QuantAxis.PerToken,
                "channel" => QuantAxis.PerChannel,
                var other => throw new ArgumentException($"--axis must be token or channel, got '{other}'"),
            };

            // The emulated cache is built by the first only-K run, after the capture and the spectra: a spec it cannot
            // stand for is refused now.
            if (r.GetValue(emulated) && bitList.Count > 0 && !KvQuantizerProbe.CanEmulate(new KvSpec(KvBits.Four, KvSpec.DefaultGroupSize, quantAxis, r.GetValue(symmetric))))
            {
                throw new ArgumentException($"--emulated-cache: the analysis cache emulates per-token specs without residual window or sinks only, not --axis {r.GetValue(axis)} (leave out --emulated-cache to measure with the library's quantized cache, or --kv-bits '' to measure no widths)");
            }

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            if (n < 2 || n > m.Config.ContextLength)
            {
                throw new ArgumentException($"--tokens must be in 2..{m.Config.ContextLength} (the model's context), got {n}");
            }

            var path = ModelPaths.ResolveData(r.GetValue(data)!);
            var ids = CalibrationTokens(tok, path, n);
            bool asJson = r.GetValue(json);
            int g = r.GetValue(group) ?? Math.Min(KvSpec.DefaultGroupSize, m.Config.HeadDim);
            var probe = new KvQuantizerProbe(new KvSpec(KvBits.Four, g, quantAxis, r.GetValue(symmetric)) { Rotate = r.GetValue(rotate) }) { EmulatedCache = r.GetValue(emulated) };
            probe.Validate(m.Config.HeadDim);
            if (quantAxis == QuantAxis.PerChannel && bitList.Count > 0 && g > n)
            {
                throw new ArgumentException($"--group {g}: per-channel groups of {g} tokens need at least {g} --tokens, got {n} (no group would fill, so nothing would be quantized)");
            }

            int values = Math.Min(n, m.Config.HeadDim);
            if (skip > values - 2)
            {
                throw new ArgumentException($"--skip-top {skip}: each head has {values} singular values (the smaller of --tokens {n} and the head dimension {m.Config.HeadDim}); at most {values - 2} can be left out so that a spectrum is drawn");
            }

            // The folder is checked and made before the analysis runs; the files go to a staging folder inside it and are
            // moved in when all are written, report.html last (a failed or interrupted run leaves nothing).
            using var output = new OutputTransaction();
            var staging = output.PrepareFolder("--out", r.GetValue(outDir)!, OutputFiles);
            var dir = Path.GetFullPath(r.GetValue(outDir)!);
            var analyzer = new KvAnalyzer(new Transformer(m, r.GetValue(threads)));
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            KvAnalysis result = null!;
            IReadOnlyList<PlotFile> plots = [];
            string report = string.Empty;
            console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var tasks = new Dictionary<string, ProgressTask>();
                    var progress = new StageProgress(stage =>
                    {
                        if (!tasks.TryGetValue(stage, out var t))
                        {
                            t = tasks[stage] = ctx.AddTask(stage);
                        }

                        return t;
                    });
                    result = analyzer.Run(ids, path, bitList, bitList.Count > 0 ? probe : null, progress);
                    var writing = ctx.AddTask("write");
                    try
                    {
                        AnalysisWriter.Write(result, staging);
                        writing.Value = 30;
                        plots = new AnalysisPlotter { SkipTopSingularValues = skip }.Write(result, staging);
                        writing.Value = 80;
                        AnalysisReport.Write(result, plots, staging);
                        output.Commit(AnalysisReport.FileName);

                        // A figure this run does not draw is removed, so that none of an earlier analysis is left beside the new one.
                        foreach (var figure in FigureFiles.Where(f => !plots.Any(p => Path.GetFileName(p.PngPath) == f || Path.GetFileName(p.SvgPath) == f)))
                        {
                            File.Delete(Path.Combine(dir, figure));
                        }

                        report = Path.Combine(dir, AnalysisReport.FileName);
                        writing.Value = 100;
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        throw new ArgumentException($"--out {dir}: cannot write the results ({e.Message})", e);
                    }
                });

            if (asJson)
            {
                CliRunner.PrintJson(Summary(result, dir, report));
            }
            else
            {
                Print(result, dir, report);
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>The figures the plotter can draw, as PNG and SVG file names.</summary>
    private static IEnumerable<string> FigureFiles => AnalysisPlotter.FigureNames.SelectMany(n => new[] { n + ".png", n + ".svg" });

    /// <summary>Every file <c>analyze</c> may write into <c>--out</c>.</summary>
    internal static IEnumerable<string> OutputFiles => [AnalysisWriter.JsonFile, .. AnalysisWriter.CsvFiles, .. FigureFiles, AnalysisReport.FileName];

    /// <summary>BOS followed by the tokenized text, truncated to <paramref name="n"/>; only as much text as needed is tokenized.</summary>
    internal static List<int> CalibrationTokens(ITokenizer tok, string path, int n)
    {
        var text = DatasetReader.ReadText(path); // refuses an empty or binary file; a .jsonl file gives its "text" fields

        for (long chars = (long)n * 16; ; chars *= 2)
        {
            bool whole = chars >= text.Length;
            var ids = tok.Encode(whole ? text : text[..(int)chars], addBos: false);
            if (ids.Count >= n - 1 || whole)
            {
                var result = new List<int>(n) { tok.BosToken >= 0 ? tok.BosToken : 1 };
                result.AddRange(ids.Take(n - 1));
                return result;
            }
        }
    }

    internal static List<KvBits> ParseBits(string text)
    {
        var list = new List<KvBits>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (KvBitsInfo.TryParse(part) is not { } b || !b.IsQuantized())
            {
                throw new ArgumentException($"--kv-bits: '{part}' is not a quantized bit width (expected a list of 1, 1.58, 2, 3, 4, 5, 6, 8 such as 1,2,3,4,8)");
            }

            if (!list.Contains(b))
            {
                list.Add(b);
            }
        }

        list.Sort();
        return list;
    }

    private static object Summary(KvAnalysis a, string dir, string report) => new
    {
        Model = a.Model.Path,
        Tokens = a.Tokens,
        Out = dir,
        Report = report,
        Seconds = a.Seconds,
        Layers = a.Layers.Select(l => new
        {
            l.Layer,
            KvFrobeniusRatio = l.Ratios.Frobenius,
            KvSpectralRatio = l.Ratios.Spectral,
            WeightFrobeniusRatio = l.Ratios.WeightFrobenius,
            WeightSpectralRatio = l.Ratios.WeightSpectral,
        }),
        Propagation = a.Propagation.Select(p => new
        {
            p.Bits,
            p.Quantized,
            FinalResidualError = p.ResidualError[^1],
            p.KlMean,
            p.KlLast,
            p.Top1Agreement,
            p.Failure,
        }),
    };

    private static void Print(KvAnalysis a, string dir, string report)
    {
        var o = Console.Out;
        o.WriteLine($"{Path.GetFileName(a.Model.Path)}: {a.Tokens} tokens, {a.Layers.Count} layers x {a.Model.KvHeads} KV heads ({a.Seconds:F1} s)");
        o.WriteLine($"{"layer",5} {"K/V frob",9} {"K/V spec",9} {"Wk/Wv frob",11} {"Wk/Wv spec",11}");
        foreach (var l in a.Layers)
        {
            o.WriteLine($"{l.Layer,5} {l.Ratios.Frobenius,9:F3} {l.Ratios.Spectral,9:F3} {l.Ratios.WeightFrobenius,11:F3} {l.Ratios.WeightSpectral,11:F3}");
        }

        foreach (var p in a.Propagation)
        {
            if (p.Failure is not null)
            {
                o.WriteLine($"only {p.Quantized.ToUpperInvariant()} at {p.Bits} bits: failed: {p.Failure}");
                continue;
            }

            o.WriteLine($"only {p.Quantized.ToUpperInvariant()} at {p.Bits} bits: residual error after last layer {p.ResidualError[^1]:G3}, KL mean {p.KlMean:G3}, top-1 agreement {p.Top1Agreement:P1}");
        }

        o.WriteLine($"wrote {dir} (report: {report})");
    }

    private sealed class StageProgress(Func<string, ProgressTask> task) : IProgress<AnalysisProgress>
    {
        public void Report(AnalysisProgress value)
        {
            var t = task(value.Stage);
            t.MaxValue = Math.Max(1, value.Total);
            t.Value = value.Done;
        }
    }
}
