using System.CommandLine;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// The sampling options of <c>generate</c> and <c>chat</c> (llama.cpp's names): <c>--temperature</c>, <c>--top-k</c>,
/// <c>--top-p</c>, <c>--min-p</c>, <c>--repeat-penalty</c>, <c>--repeat-last-n</c>, <c>--presence-penalty</c>,
/// <c>--frequency-penalty</c>, <c>--seed</c>.
/// </summary>
internal sealed class SamplingOptions
{
    public Option<float> Temperature { get; } = new("--temperature") { Description = "sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };

    public Option<int> TopK { get; } = new("--top-k") { Description = "keep the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };

    public Option<float> TopP { get; } = new("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1f };

    public Option<float> MinP { get; } = new("--min-p") { Description = "keep tokens at least this fraction as likely as the most likely one (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> RepeatPenalty { get; } = new("--repeat-penalty") { Description = "divide positive (multiply negative) logits of recent tokens by this (1 = off)", DefaultValueFactory = _ => 1f };

    public Option<int> RepeatLastN { get; } = new("--repeat-last-n") { Description = "recent tokens the penalties look at (-1 = the whole sequence, 0 = off)", DefaultValueFactory = _ => 64 };

    public Option<float> PresencePenalty { get; } = new("--presence-penalty") { Description = "subtract from the logit of each recent token once (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> FrequencyPenalty { get; } = new("--frequency-penalty") { Description = "subtract from the logit of each recent token once per occurrence (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<ulong> Seed { get; } = new("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };

    public Option<string[]> LogitBias { get; } = new("--logit-bias", "-l")
    {
        Description = "add a bias to a token's logit, TOKEN_ID(+|-)BIAS as llama.cpp's (e.g. 15043+1, 29871-inf bans the token); repeatable",
        DefaultValueFactory = _ => [],
    };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [Temperature, TopK, TopP, MinP, RepeatPenalty, RepeatLastN, PresencePenalty, FrequencyPenalty, LogitBias, Seed];

    /// <summary>The sampler the options ask for, with <paramref name="grammar"/> (or none); an error names the option out of range.</summary>
    public Sampler Create(ParseResult r, KvAdaQuant.Grammar.GrammarConstraint? grammar = null) => new(r.GetValue(Temperature), r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed))
    {
        Grammar = grammar,
        MinP = r.GetValue(MinP),
        RepeatPenalty = r.GetValue(RepeatPenalty),
        RepeatLastN = r.GetValue(RepeatLastN),
        PresencePenalty = r.GetValue(PresencePenalty),
        FrequencyPenalty = r.GetValue(FrequencyPenalty),
        LogitBias = ParseLogitBias(r.GetValue(LogitBias) ?? []),
    };

    /// <summary>
    /// <c>--logit-bias</c> values as llama.cpp writes them, TOKEN_ID followed by a signed bias (<c>15043+1</c>, <c>15043-0.5</c>,
    /// <c>15043-inf</c>); a token given twice adds its biases. Anything else is an error naming the value.
    /// </summary>
    public static Dictionary<int, float> ParseLogitBias(IEnumerable<string> values)
    {
        var biases = new Dictionary<int, float>();
        foreach (string v in values)
        {
            var m = System.Text.RegularExpressions.Regex.Match(v.Trim(), @"^(\d+)([+-])(inf|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)$", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
            if (!m.Success || !int.TryParse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out int token))
            {
                throw new ArgumentException($"--logit-bias '{v}': expected TOKEN_ID(+|-)BIAS, e.g. 15043+1 or 15043-inf");
            }

            float magnitude = m.Groups[3].Value.Equals("inf", StringComparison.OrdinalIgnoreCase)
                ? float.PositiveInfinity
                : float.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (m.Groups[2].Value == "+" && float.IsPositiveInfinity(magnitude))
            {
                throw new ArgumentException($"--logit-bias '{v}': +inf is not a bias (a large finite one forces the token; -inf bans it)");
            }

            float bias = m.Groups[2].Value == "-" ? -magnitude : magnitude;
            biases[token] = biases.GetValueOrDefault(token) + bias;
        }

        return biases;
    }
}
