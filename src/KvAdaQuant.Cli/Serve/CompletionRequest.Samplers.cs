using System.Text.Json;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// llama-server's further sampling fields: <c>typical_p</c>, <c>mirostat</c>, <c>mirostat_tau</c>, <c>mirostat_eta</c>,
/// <c>xtc_probability</c>, <c>xtc_threshold</c>, <c>dry_multiplier</c>, <c>dry_base</c>, <c>dry_allowed_length</c>,
/// <c>dry_penalty_last_n</c>, <c>dry_sequence_breakers</c> and <c>top_n_sigma</c>, each checked (a 400 naming the field);
/// absent ones take the server's (<c>kvaq serve</c>'s options).
/// </summary>
internal sealed partial record CompletionRequest
{
    /// <summary>typical_p (1 = off).</summary>
    public float TypicalP { get; init; } = 1f;

    /// <summary>mirostat: 0 off, 1 Mirostat, 2 Mirostat 2.0.</summary>
    public int Mirostat { get; init; }

    /// <summary>mirostat_tau (target surprise in bits, default 5).</summary>
    public float MirostatTau { get; init; } = 5f;

    /// <summary>mirostat_eta (learning rate, default 0.1).</summary>
    public float MirostatEta { get; init; } = 0.1f;

    /// <summary>xtc_probability (0 = off).</summary>
    public float XtcProbability { get; init; }

    /// <summary>xtc_threshold (default 0.1).</summary>
    public float XtcThreshold { get; init; } = 0.1f;

    /// <summary>dry_multiplier (0 = off).</summary>
    public float DryMultiplier { get; init; }

    /// <summary>dry_base (default 1.75).</summary>
    public float DryBase { get; init; } = 1.75f;

    /// <summary>dry_allowed_length (default 2).</summary>
    public int DryAllowedLength { get; init; } = 2;

    /// <summary>dry_penalty_last_n (-1 = the whole sequence, 0 = off).</summary>
    public int DryPenaltyLastN { get; init; } = -1;

    /// <summary>dry_sequence_breakers (default llama.cpp's: newline, colon, double quote, asterisk).</summary>
    public IReadOnlyList<string> DrySequenceBreakers { get; init; } = Engine.DrySequenceBreakers.Defaults;

    /// <summary>top_n_sigma (&lt;= 0 = off, default -1).</summary>
    public float TopNSigma { get; init; } = -1f;

    // The further sampling fields of body onto request (absent ones from defaults).
    private static CompletionRequest WithSamplers(JsonElement body, CompletionRequest defaults, CompletionRequest request)
    {
        float Real(string name, float fallback, Func<float, bool> ok, string range) => Field(body, name) is { } e
            ? Number(e, name) is var v && float.IsFinite(v) && ok(v) ? v : throw Invalid(name, $"{name} must be {range}, got {Raw(e)}")
            : fallback;

        int Whole(string name, int fallback, Func<long, bool> ok, string range) => Field(body, name) is { } e
            ? Integer(e, name) is var v && ok(v) ? (int)v : throw Invalid(name, $"{name} must be {range}, got {Raw(e)}")
            : fallback;

        return request with
        {
            TypicalP = Real("typical_p", defaults.TypicalP, v => v is >= 0f and <= 1f, "in [0, 1] (1 = off)"),
            Mirostat = Whole("mirostat", defaults.Mirostat, v => v is >= 0 and <= 2, "0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)"),
            MirostatTau = Real("mirostat_tau", defaults.MirostatTau, v => v >= 0f, "a finite number >= 0"),
            MirostatEta = Real("mirostat_eta", defaults.MirostatEta, v => v >= 0f, "a finite number >= 0"),
            XtcProbability = Real("xtc_probability", defaults.XtcProbability, v => v is >= 0f and <= 1f, "in [0, 1] (0 = off)"),
            XtcThreshold = Real("xtc_threshold", defaults.XtcThreshold, v => v is >= 0f and <= 1f, "in [0, 1]"),
            DryMultiplier = Real("dry_multiplier", defaults.DryMultiplier, v => v >= 0f, "a finite number >= 0 (0 = off)"),
            DryBase = Real("dry_base", defaults.DryBase, v => v >= 1f, "a finite number >= 1"),
            DryAllowedLength = Whole("dry_allowed_length", defaults.DryAllowedLength, v => v is >= 0 and <= int.MaxValue, "an integer >= 0"),
            DryPenaltyLastN = Whole("dry_penalty_last_n", defaults.DryPenaltyLastN, v => v is >= -1 and <= int.MaxValue, "an integer >= -1 (-1 = the whole sequence, 0 = off)"),
            DrySequenceBreakers = Field(body, "dry_sequence_breakers") is { } b ? Breakers(b) : defaults.DrySequenceBreakers,
            TopNSigma = Real("top_n_sigma", defaults.TopNSigma, _ => true, "a finite number (<= 0 = off)"),
        };
    }

    // dry_sequence_breakers: a non-empty array of non-empty strings (llama-server's).
    private static List<string> Breakers(JsonElement e)
    {
        const string name = "dry_sequence_breakers";
        if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
        {
            throw Invalid(name, $"{name} must be a non-empty array of strings, got {Raw(e)}");
        }

        var list = new List<string>();
        int i = 0;
        foreach (var s in e.EnumerateArray())
        {
            list.Add(s.ValueKind == JsonValueKind.String && s.GetString() is { Length: > 0 } text
                ? text
                : throw Invalid(name, $"{name}[{i}] must be a non-empty string, got {Raw(s)}"));
            i++;
        }

        return list;
    }
}
