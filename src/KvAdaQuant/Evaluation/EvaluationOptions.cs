namespace KvAdaQuant.Evaluation;

/// <summary>
/// What <see cref="TaskEvaluator"/> runs: the task, its data (a path, a short name such as <c>wikitext-2</c>, <c>ptb</c>,
/// <c>c4</c>, or <c>sampled</c> for text sampled from the model; null = the task's default), the context window, the item
/// or chunk limit (0 = all), the seed of sampled text, and GSM8K's shots and generation length. A context or generation
/// length of 0 is the task's default, which <see cref="TaskEvaluator"/> resolves (<see cref="TaskEvaluator.Options"/>).
/// </summary>
public sealed record EvaluationOptions
{
    /// <summary>Task names accepted by <c>--task</c>.</summary>
    public static readonly IReadOnlyList<string> Tasks = ["perplexity", "kl", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "lambada", "gsm8k"];

    /// <summary>Task name.</summary>
    public required string Task { get; init; }

    /// <summary>Data override.</summary>
    public string? Data { get; init; }

    /// <summary>The context window of tasks other than gsm8k when <see cref="Context"/> is 0 (at most the model's).</summary>
    public const int DefaultContext = 256;

    /// <summary>The GSM8K generation limit when <see cref="MaxNewTokens"/> is 0 (lm-eval's; at most half the context).</summary>
    public const int DefaultMaxNewTokens = 256;

    /// <summary>
    /// Context window (tokens per chunk for perplexity and kl); 0 = the model's whole context for gsm8k (its few-shot prompt
    /// and the generation share it), <see cref="DefaultContext"/> for the other tasks.
    /// </summary>
    public int Context { get; init; }

    /// <summary>Items (or chunks for perplexity/kl) to evaluate; 0 = all.</summary>
    public int Limit { get; init; }

    /// <summary>Seed of model-sampled text.</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>GSM8K few-shot examples.</summary>
    public int Shots { get; init; } = 5;

    /// <summary>GSM8K generation limit; 0 = <see cref="DefaultMaxNewTokens"/>, at most half the context.</summary>
    public int MaxNewTokens { get; init; }

    /// <summary>The metric a grid heat map shows and whether lower is better.</summary>
    public (string Metric, bool LowerIsBetter) PrimaryMetric => Task switch
    {
        "perplexity" => ("perplexity", true),
        "kl" => ("mean_kl", true),
        "gsm8k" => ("exact_match_strict", false),
        _ => ("acc", false),
    };
}
