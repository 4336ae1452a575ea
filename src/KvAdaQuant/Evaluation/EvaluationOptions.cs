namespace KvAdaQuant.Evaluation;

/// <summary>
/// What <see cref="TaskEvaluator"/> runs: the task, its data (a path, a short name such as <c>wikitext-2</c>, <c>ptb</c>,
/// <c>c4</c>, or <c>sampled</c> for text sampled from the model; null = the task's default), the context window, the item
/// or chunk limit (0 = all), the seed of sampled text, and GSM8K's shots and generation length.
/// </summary>
public sealed record EvaluationOptions
{
    /// <summary>Task names accepted by <c>--task</c>.</summary>
    public static readonly IReadOnlyList<string> Tasks = ["perplexity", "kl", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "lambada", "gsm8k"];

    /// <summary>Task name.</summary>
    public required string Task { get; init; }

    /// <summary>Data override.</summary>
    public string? Data { get; init; }

    /// <summary>Context window (tokens per chunk for perplexity and kl).</summary>
    public int Context { get; init; } = 256;

    /// <summary>Items (or chunks for perplexity/kl) to evaluate; 0 = all.</summary>
    public int Limit { get; init; }

    /// <summary>Seed of model-sampled text.</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>GSM8K few-shot examples.</summary>
    public int Shots { get; init; } = 5;

    /// <summary>GSM8K generation limit.</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>The metric a grid heat map shows and whether lower is better.</summary>
    public (string Metric, bool LowerIsBetter) PrimaryMetric => Task switch
    {
        "perplexity" => ("perplexity", true),
        "kl" => ("mean_kl", true),
        "gsm8k" => ("exact_match_strict", false),
        _ => ("acc", false),
    };
}
