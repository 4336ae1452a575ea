using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// Runs one task of <see cref="EvaluationOptions.Tasks"/> against any number of caches: the dataset is read once, and for
/// <c>kl</c> the FP32 reference distributions are computed once and every cache is compared with them.
/// </summary>
public sealed class TaskEvaluator
{
    private readonly Transformer _transformer;
    private readonly ITokenizer _tokenizer;
    private List<int>? _textTokens;
    private KlReference? _klReference;
    private List<MultipleChoiceItem>? _choiceItems;
    private List<LambadaItem>? _lambada;
    private List<Gsm8kItem>? _gsm8k;

    /// <summary>Creates the evaluator; throws on an unknown task.</summary>
    public TaskEvaluator(Transformer transformer, ITokenizer tokenizer, EvaluationOptions options)
    {
        if (!EvaluationOptions.Tasks.Contains(options.Task))
        {
            throw new ArgumentException($"--task '{options.Task}': unknown task (expected one of {string.Join(", ", EvaluationOptions.Tasks)})");
        }

        if (options.Limit < 0)
        {
            throw new ArgumentException($"--limit must be >= 0, got {options.Limit}");
        }

        if (options.Task is not ("perplexity" or "kl") && options.Data is { } d && (IsSampledName(d) || IsTextName(d)))
        {
            throw new ArgumentException(IsSampledName(d)
                ? $"--data {d}: only --task perplexity and kl take model-sampled text; --task {options.Task} reads its dataset file (default {DefaultData(options.Task)})"
                : $"--data {d}: a plain text for --task perplexity and kl; --task {options.Task} reads its dataset file (default {DefaultData(options.Task)})");
        }

        int modelContext = transformer.Config.ContextLength;
        if (options.Context is < 4 and not 0)
        {
            throw new ArgumentException($"--ctx must be at least 4, got {options.Context}");
        }

        if (options.Context > modelContext)
        {
            throw new ArgumentException($"--ctx {options.Context} exceeds the model's context length {modelContext}");
        }

        _transformer = transformer;
        _tokenizer = tokenizer;
        int ctx = options.Context != 0 ? options.Context
            : options.Task == "gsm8k" ? modelContext : Math.Min(EvaluationOptions.DefaultContext, modelContext);
        int maxNew = options.MaxNewTokens != 0 ? options.MaxNewTokens : Math.Min(EvaluationOptions.DefaultMaxNewTokens, ctx / 2);
        Options = options with { Context = ctx, MaxNewTokens = maxNew };
        if (IsSampled && (long)options.Limit * ctx > int.MaxValue)
        {
            throw new ArgumentException($"--limit {options.Limit} chunks of --ctx {ctx} tokens of model-sampled text are {(long)options.Limit * ctx} tokens, more than one stream holds ({int.MaxValue})");
        }
    }

    /// <summary>Options in force, defaults (0) resolved.</summary>
    public EvaluationOptions Options { get; }

    /// <summary>What the task reads, for reports ("wikitext-2/wiki.test.raw", "model-sampled text (seed 42)", ...).</summary>
    public string DataDescription => Options.Task switch
    {
        "perplexity" or "kl" when IsSampled => $"text sampled from the model itself (FP32 cache, temperature 1, seed {Options.Seed}): in-distribution",
        _ => DataPath(),
    };

    private bool IsSampled => IsSampledName(Options.Data);

    /// <summary>Evaluates the cache made by <paramref name="cacheFactory"/>.</summary>
    public EvaluationResult Evaluate(Func<KvLayout, IKvCache> cacheFactory, Action<int, int>? progress = null)
    {
        var o = Options;
        int limit = o.Limit > 0 ? o.Limit : int.MaxValue;
        switch (o.Task)
        {
            case "perplexity":
                {
                    var r = PerplexityEvaluator.Evaluate(_transformer, TextTokens(), o.Context, cacheFactory, _tokenizer.BosToken, (i, n, _) => progress?.Invoke(i, n), limit);
                    var metrics = new Dictionary<string, double> { ["perplexity"] = r.Perplexity };
                    StandardError.Add(metrics, "perplexity", r.PerplexityUncertainty);
                    return new EvaluationResult(metrics, r.TokensScored, r.Seconds);
                }

            case "kl":
                {
                    _klReference ??= KlReference.Compute(_transformer, TextTokens(), o.Context, l => new FullPrecisionKvCache(l, half: false), _tokenizer.BosToken, limit);
                    var r = _klReference.Compare(cacheFactory, progress);
                    return new EvaluationResult(
                        new Dictionary<string, double>
                        {
                            ["mean_kl"] = r.MeanKl,
                            ["p99_kl"] = r.P99Kl,
                            ["max_kl"] = r.MaxKl,
                            ["top1_agreement"] = r.Top1Agreement,
                            ["perplexity"] = r.Perplexity,
                            ["reference_perplexity"] = r.ReferencePerplexity,
                        },
                        r.Positions,
                        r.Seconds);
                }

            case "lambada":
                {
                    _lambada ??= DatasetReader.ReadLambada(DataPath()).Take(limit).ToList();
                    using var scorer = new LogLikelihoodScorer(_transformer, _tokenizer, cacheFactory, o.Context);
                    var r = LambadaEvaluator.Evaluate(scorer, _lambada, progress);
                    var metrics = new Dictionary<string, double> { ["acc"] = r.Acc, ["perplexity"] = r.Perplexity };
                    StandardError.Add(metrics, "acc", StandardError.OfProportion(r.Acc, r.Items));
                    return new EvaluationResult(metrics, r.Items, r.Seconds);
                }

            case "gsm8k":
                {
                    _gsm8k ??= DatasetReader.ReadGsm8k(DataPath());
                    var r = new Gsm8kEvaluator(_transformer, _tokenizer).Evaluate(_gsm8k, o.Shots, limit, o.MaxNewTokens, o.Context, cacheFactory, progress);
                    var metrics = new Dictionary<string, double>
                    {
                        ["exact_match_strict"] = r.StrictMatch,
                        ["exact_match_flexible"] = r.FlexibleExtract,
                        ["shots_min"] = r.MinShots,
                        ["shots_max"] = r.MaxShots,
                    };
                    StandardError.Add(metrics, "exact_match_strict", StandardError.OfProportion(r.StrictMatch, r.Items));
                    StandardError.Add(metrics, "exact_match_flexible", StandardError.OfProportion(r.FlexibleExtract, r.Items));
                    return new EvaluationResult(metrics, r.Items, r.Seconds);
                }

            default:
                {
                    _choiceItems ??= ReadChoices().Take(limit).ToList();
                    using var scorer = new LogLikelihoodScorer(_transformer, _tokenizer, cacheFactory, o.Context);
                    var r = MultipleChoiceEvaluator.Evaluate(scorer, _choiceItems, progress);
                    var metrics = new Dictionary<string, double> { ["acc"] = r.Acc };
                    StandardError.Add(metrics, "acc", StandardError.OfProportion(r.Acc, r.Items));
                    if (o.Task is "arc_easy" or "arc_challenge" or "hellaswag" or "piqa")
                    {
                        metrics["acc_norm"] = r.AccNorm;
                        StandardError.Add(metrics, "acc_norm", StandardError.OfProportion(r.AccNorm, r.Items));
                    }

                    return new EvaluationResult(metrics, r.Items, r.Seconds);
                }
        }
    }

    /// <summary>The data file the task reads.</summary>
    public string DataPath()
    {
        if (Options.Data is { } d && !IsSampled)
        {
            return d switch
            {
                _ when IsTextName(d) && d.StartsWith("wikitext", StringComparison.Ordinal) => ModelPaths.ResolveData("wikitext-2/wiki.test.raw"),
                "ptb" => ModelPaths.ResolveData("ptb/ptb.test.txt"),
                "c4" => ModelPaths.ResolveData("c4/c4_validation_sample.jsonl"),
                _ => ModelPaths.ResolveData(d),
            };
        }

        return ModelPaths.ResolveData(DefaultData(Options.Task));
    }

    /// <summary>The task's default data file, relative to the fixtures' <c>data</c> folder.</summary>
    public static string DefaultData(string task) => task switch
    {
        "perplexity" or "kl" => "wikitext-2/wiki.test.raw",
        "arc_easy" => "arc/ARC-Easy-Test.jsonl",
        "arc_challenge" => "arc/ARC-Challenge-Test.jsonl",
        "hellaswag" => "hellaswag/hellaswag_val_full.txt",
        "piqa" => "piqa/valid.jsonl",
        "winogrande" => "winogrande/dev.jsonl",
        "boolq" => "boolq/val.jsonl",
        "lambada" => "lambada/lambada_test.jsonl",
        "gsm8k" => "gsm8k/test.jsonl",
        _ => throw new ArgumentException($"--task {task}: no default data"),
    };

    /// <summary>Whether <c>--data</c> names text sampled from the model (perplexity and kl only).</summary>
    public static bool IsSampledName(string? data) => data is "sampled" or "model" or "model-sampled";

    /// <summary>Whether <c>--data</c> is one of the short names of a perplexity text (wikitext-2, ptb, c4).</summary>
    private static bool IsTextName(string data) => data is "wikitext-2" or "wikitext2" or "wikitext" or "ptb" or "c4";

    /// <summary>The tokens of the perplexity/kl text (BOS first), read or sampled once.</summary>
    public IReadOnlyList<int> TextTokens()
    {
        if (_textTokens is not null)
        {
            return _textTokens;
        }

        int ctx = Options.Context;
        int chunks = Options.Limit > 0 ? Options.Limit : 0;
        if (IsSampled)
        {
            _textTokens = ModelTextSampler.Sample(_transformer, _tokenizer, (chunks > 0 ? chunks : 8) * ctx, ctx, Options.Seed); // fits: checked when made
        }
        else
        {
            // Read only as much text as the chunks need (about 4 characters per token, with a wide margin); all of it when
            // that is more than a string holds.
            long chars = (long)chunks * ctx * 16;
            string text = DatasetReader.ReadText(DataPath(), chars is > 0 and <= int.MaxValue ? (int)chars : 0);
            _textTokens = _tokenizer.Encode(text, addBos: true);
        }

        return _textTokens;
    }

    private List<MultipleChoiceItem> ReadChoices()
    {
        string path = DataPath();
        return Options.Task switch
        {
            "arc_easy" or "arc_challenge" => DatasetReader.ReadArc(path),
            "hellaswag" => DatasetReader.ReadHellaSwag(path),
            "piqa" => DatasetReader.ReadPiqa(path, PiqaLabels(path)),
            "winogrande" => DatasetReader.ReadWinogrande(path),
            "boolq" => DatasetReader.ReadBoolQ(path),
            _ => throw new ArgumentException($"--task {Options.Task} is not a multiple-choice task"),
        };
    }

    private static string PiqaLabels(string path)
    {
        var dir = Path.GetDirectoryName(path) ?? ".";
        var stem = Path.GetFileNameWithoutExtension(path);
        return Path.Combine(dir, stem + "-labels.lst");
    }
}
