using System.CommandLine;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// The sampling options of <c>generate</c> and <c>chat</c> (llama.cpp's names): <c>--temperature</c>, <c>--top-k</c>,
/// <c>--top-p</c>, <c>--min-p</c>, <c>--repeat-penalty</c>, <c>--repeat-last-n</c>, <c>--presence-penalty</c>,
/// <c>--frequency-penalty</c>, <c>--typical</c>, <c>--mirostat</c>, <c>--mirostat-lr</c>, <c>--mirostat-ent</c>,
/// <c>--xtc-probability</c>, <c>--xtc-threshold</c>, <c>--dry-multiplier</c>, <c>--dry-base</c>, <c>--dry-allowed-length</c>,
/// <c>--dry-penalty-last-n</c>, <c>--dry-sequence-breaker</c>, <c>--top-n-sigma</c>, <c>--seed</c>.
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

    public Option<float> Typical { get; } = new("--typical") { Description = "locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to this mass (1 = off)", DefaultValueFactory = _ => 1f };

    public Option<int> Mirostat { get; } = new("--mirostat") { Description = "Mirostat sampling in place of top-k, typical, top-p, min-p, XTC and top-n-sigma: 0 = off, 1 = Mirostat, 2 = Mirostat 2.0", DefaultValueFactory = _ => 0 };

    public Option<float> MirostatLr { get; } = new("--mirostat-lr") { Description = "Mirostat's learning rate, eta", DefaultValueFactory = _ => 0.1f };

    public Option<float> MirostatEnt { get; } = new("--mirostat-ent") { Description = "Mirostat's target entropy (surprise in bits), tau", DefaultValueFactory = _ => 5f };

    public Option<float> XtcProbability { get; } = new("--xtc-probability") { Description = "XTC: the chance per token of removing the likeliest tokens (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> XtcThreshold { get; } = new("--xtc-threshold") { Description = "XTC: tokens at least this likely are removed, but the least likely of them (above 0.5 = off)", DefaultValueFactory = _ => 0.1f };

    public Option<float> DryMultiplier { get; } = new("--dry-multiplier") { Description = "DRY: penalty multiplier for tokens that would extend a repeat (0 = off)", DefaultValueFactory = _ => 0f };

    public Option<float> DryBase { get; } = new("--dry-base") { Description = "DRY: the penalty grows as this to the power of the repeat's excess length", DefaultValueFactory = _ => 1.75f };

    public Option<int> DryAllowedLength { get; } = new("--dry-allowed-length") { Description = "DRY: repeats up to this long are not penalized", DefaultValueFactory = _ => 2 };

    public Option<int> DryPenaltyLastN { get; } = new("--dry-penalty-last-n") { Description = "DRY: recent tokens it looks at (-1 = the whole sequence, 0 = off)", DefaultValueFactory = _ => -1 };

    public Option<string[]> DrySequenceBreaker { get; } = new("--dry-sequence-breaker")
    {
        Description = "DRY: a text no repeat reaches back over (escapes such as \\n work); repeatable; the first replaces the defaults \\n : \" *; 'none' for none",
        DefaultValueFactory = _ => [],
    };

    public Option<float> TopNSigma { get; } = new("--top-n-sigma") { Description = "keep the tokens whose logit is within N standard deviations of the largest (-1 = off)", DefaultValueFactory = _ => -1f };

    public Option<ulong> Seed { get; } = new("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };

    public Option<string[]> LogitBias { get; } = new("--logit-bias", "-l")
    {
        Description = "add a bias to a token's logit, TOKEN_ID(+|-)BIAS as llama.cpp's (e.g. 15043+1, 29871-inf bans the token); repeatable",
        DefaultValueFactory = _ => [],
    };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All =>
    [
        Temperature, TopK, TopP, MinP, RepeatPenalty, RepeatLastN, PresencePenalty, FrequencyPenalty, LogitBias, Typical, Mirostat, MirostatLr, MirostatEnt,
        XtcProbability, XtcThreshold, DryMultiplier, DryBase, DryAllowedLength, DryPenaltyLastN, DrySequenceBreaker, TopNSigma, Seed,
    ];

    /// <summary>
    /// The sampler the options ask for, with <paramref name="grammar"/> (or none); an error names the option out of range.
    /// DRY's sequence breakers are matched on the token texts of <paramref name="tokenizer"/> (without one, DRY has none).
    /// </summary>
    public Sampler Create(ParseResult r, KvAdaQuant.Grammar.GrammarConstraint? grammar = null, Tokenization.ITokenizer? tokenizer = null)
    {
        var breakers = Breakers(r);
        return new Sampler(r.GetValue(Temperature), r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed))
        {
            Grammar = grammar,
            MinP = r.GetValue(MinP),
            RepeatPenalty = r.GetValue(RepeatPenalty),
            RepeatLastN = r.GetValue(RepeatLastN),
            PresencePenalty = r.GetValue(PresencePenalty),
            FrequencyPenalty = r.GetValue(FrequencyPenalty),
            LogitBias = ParseLogitBias(r.GetValue(LogitBias) ?? []),
            TypicalP = r.GetValue(Typical),
            Mirostat = r.GetValue(Mirostat),
            MirostatEta = r.GetValue(MirostatLr),
            MirostatTau = r.GetValue(MirostatEnt),
            XtcProbability = r.GetValue(XtcProbability),
            XtcThreshold = r.GetValue(XtcThreshold),
            DryMultiplier = r.GetValue(DryMultiplier),
            DryBase = r.GetValue(DryBase),
            DryAllowedLength = r.GetValue(DryAllowedLength),
            DryPenaltyLastN = r.GetValue(DryPenaltyLastN),
            TopNSigma = r.GetValue(TopNSigma),
            DrySequenceBreakers = DrySequenceBreakers.ForSampler(tokenizer, breakers, r.GetValue(DryMultiplier), r.GetValue(DryPenaltyLastN)),
        };
    }

    /// <summary>
    /// DRY's sequence breakers the options name: llama.cpp's defaults (<see cref="DrySequenceBreakers.Defaults"/>) unless
    /// <c>--dry-sequence-breaker</c> is given (escapes such as <c>\n</c> read as llama.cpp reads them), none for <c>none</c>.
    /// </summary>
    public IReadOnlyList<string> Breakers(ParseResult r)
    {
        string[] given = r.GetValue(DrySequenceBreaker) ?? [];
        if (given.Length == 0)
        {
            return DrySequenceBreakers.Defaults;
        }

        if (given.Any(g => g == "none"))
        {
            return given.Length == 1 ? [] : throw new ArgumentException("--dry-sequence-breaker: 'none' (no breakers) cannot be given with other breakers");
        }

        return [.. given.Select(g => Unescape(g) is { Length: > 0 } u ? u : throw new ArgumentException("--dry-sequence-breaker: a breaker is an empty text"))];
    }

    /// <summary>llama.cpp's escapes in a command-line text: \n, \r, \t, \', \", \\ and \xHH; others stay as written.</summary>
    public static string Unescape(string text)
    {
        var sb = new System.Text.StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\' || i + 1 >= text.Length)
            {
                sb.Append(text[i]);
                continue;
            }

            char e = text[++i];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case '\\': sb.Append('\\'); break;
                case 'x' when i + 2 < text.Length && int.TryParse(text.AsSpan(i + 1, 2), System.Globalization.NumberStyles.HexNumber, null, out int code):
                    sb.Append((char)code);
                    i += 2;
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }

        return sb.ToString();
    }

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
