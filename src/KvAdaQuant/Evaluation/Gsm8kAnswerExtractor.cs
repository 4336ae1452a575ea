using System.Text.RegularExpressions;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// lm-evaluation-harness's gsm8k answer extraction and scoring (task version 3): <c>strict-match</c> takes the first
/// match of <c>#### (\-?[0-9\.\,]+)</c>; <c>flexible-extract</c> takes the last match of
/// <c>(-?[$0-9.,]{2,})|(-?[0-9]+)</c> (its first non-empty group); no match gives "[invalid]". <c>exact_match</c> then
/// deletes the patterns <c>,</c>, <c>\$</c>, <c>(?s).*#### </c> and <c>\.$</c> from prediction and reference alike,
/// lower-cases both and compares them.
/// </summary>
public static partial class Gsm8kAnswerExtractor
{
    /// <summary>What an extraction without a match yields.</summary>
    public const string Invalid = "[invalid]";

    /// <summary>The strict-match filter.</summary>
    public static string Strict(string response)
    {
        var m = StrictPattern().Match(response);
        return m.Success ? m.Groups[1].Value.Trim() : Invalid;
    }

    /// <summary>The flexible-extract filter.</summary>
    public static string Flexible(string response)
    {
        var matches = FlexiblePattern().Matches(response);
        if (matches.Count == 0)
        {
            return Invalid;
        }

        var last = matches[^1];
        string value = last.Groups[1].Success && last.Groups[1].Length > 0 ? last.Groups[1].Value : last.Groups[2].Value;
        return value.Trim();
    }

    /// <summary>exact_match's normalisation: the ignore patterns removed, lower case.</summary>
    public static string Normalize(string text)
    {
        text = text.Replace(",", string.Empty, StringComparison.Ordinal).Replace("$", string.Empty, StringComparison.Ordinal);
        text = UpToMarker().Replace(text, string.Empty);
        text = TrailingPeriod().Replace(text, string.Empty);
        return text.ToLowerInvariant();
    }

    /// <summary>exact_match of an extracted prediction against a reference solution (the dataset's whole answer field).</summary>
    public static bool IsMatch(string prediction, string reference) => Normalize(prediction) == Normalize(reference);

    [GeneratedRegex(@"#### (\-?[0-9\.\,]+)")]
    private static partial Regex StrictPattern();

    [GeneratedRegex(@"(-?[$0-9.,]{2,})|(-?[0-9]+)")]
    private static partial Regex FlexiblePattern();

    [GeneratedRegex(@".*#### ", RegexOptions.Singleline)]
    private static partial Regex UpToMarker();

    [GeneratedRegex(@"\.$")]
    private static partial Regex TrailingPeriod();
}
