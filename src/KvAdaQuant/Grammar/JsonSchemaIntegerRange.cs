using System.Globalization;

namespace KvAdaQuant.Grammar;

/// <summary>
/// GBNF for the decimal spellings of the integers in a range (JSON Schema's <c>minimum</c> / <c>maximum</c> on an integer),
/// digit by digit: no leading zeros, no "-0", at most <see cref="MaxDigits"/> digits (as the plain integer rule).
/// </summary>
internal static class JsonSchemaIntegerRange
{
    public const int MaxDigits = 16;

    /// <summary>The largest magnitude spelled: sixteen nines.</summary>
    public const long Cap = 9_999_999_999_999_999;

    /// <summary>The expression for the integers in [<paramref name="min"/>, <paramref name="max"/>] (null: unbounded on that side); null when the range is empty.</summary>
    public static string? Expression(long? min, long? max)
    {
        long lo = Math.Max(min ?? -Cap, -Cap);
        long hi = Math.Min(max ?? Cap, Cap);
        if (lo > hi)
        {
            return null;
        }

        var alternatives = new List<string>();
        if (lo < 0)
        {
            // -x for x in [max(1, -hi), -lo]
            long a = Math.Max(1, -hi);
            long b = -lo;
            alternatives.Add("\"-\" " + JsonSchemaGbnfText.Group(Positive(a, b, min is null)));
        }

        if (hi >= 0)
        {
            alternatives.Insert(0, Positive(Math.Max(lo, 0), hi, max is null));
        }

        return string.Join(" | ", alternatives);
    }

    /// <summary>Non-negative integers in [a, b]; when <paramref name="open"/> is set, b is the cap and longer spellings are one term.</summary>
    private static string Positive(long a, long b, bool open)
    {
        string sa = a.ToString(CultureInfo.InvariantCulture);
        string sb = b.ToString(CultureInfo.InvariantCulture);
        var alternatives = new List<string>();
        if (open && sa.Length < MaxDigits)
        {
            alternatives.Add(SameLength(sa, new string('9', sa.Length)));
            int minRest = sa.Length;
            alternatives.Add($"[1-9] [0-9]{{{minRest},{MaxDigits - 1}}}".Replace($"{{{MaxDigits - 1},{MaxDigits - 1}}}", $"{{{MaxDigits - 1}}}", StringComparison.Ordinal));
            return string.Join(" | ", alternatives);
        }

        for (int d = sa.Length; d <= sb.Length; d++)
        {
            string lo = d == sa.Length ? sa : "1" + new string('0', d - 1);
            string hi = d == sb.Length ? sb : new string('9', d);
            alternatives.Add(SameLength(lo, hi));
        }

        return string.Join(" | ", alternatives);
    }

    /// <summary>Digit strings of one length between <paramref name="lo"/> and <paramref name="hi"/> (lo &lt;= hi).</summary>
    private static string SameLength(string lo, string hi)
    {
        int common = 0;
        while (common < lo.Length && lo[common] == hi[common])
        {
            common++;
        }

        string prefix = common > 0 ? JsonSchemaGbnfText.Literal(lo[..common]) : "";
        if (common == lo.Length)
        {
            return prefix;
        }

        string x = lo[common..];
        string y = hi[common..];
        int rest = x.Length - 1;
        bool lowZeros = x.AsSpan(1).IndexOfAnyExcept('0') < 0;
        bool highNines = y.AsSpan(1).IndexOfAnyExcept('9') < 0;
        var alternatives = new List<string>();
        if (!lowZeros)
        {
            alternatives.Add(Join(JsonSchemaGbnfText.Literal(x[..1]), JsonSchemaGbnfText.Group(SameLength(x[1..], new string('9', rest)))));
        }

        char from = lowZeros ? x[0] : (char)(x[0] + 1);
        char to = highNines ? y[0] : (char)(y[0] - 1);
        if (from <= to)
        {
            string digit = from == to ? JsonSchemaGbnfText.Literal(from.ToString()) : $"[{from}-{to}]";
            alternatives.Add(Join(digit, JsonSchemaGbnfText.Repeat("[0-9]", rest, rest)));
        }

        if (!highNines)
        {
            alternatives.Add(Join(JsonSchemaGbnfText.Literal(y[..1]), JsonSchemaGbnfText.Group(SameLength(new string('0', rest), y[1..]))));
        }

        string body = string.Join(" | ", alternatives);
        return Join(prefix, JsonSchemaGbnfText.Group(body));
    }

    private static string Join(string a, string b)
    {
        if (a.Length == 0 || b.Length == 0)
        {
            return a + b;
        }

        // Two plain literals (digits only) read better as one.
        if (IsDigitLiteral(a) && IsDigitLiteral(b))
        {
            return a[..^1] + b[1..];
        }

        return a + " " + b;
    }

    private static bool IsDigitLiteral(string s) => s.Length >= 3 && s[0] == '"' && s[^1] == '"' && s.AsSpan(1, s.Length - 2).IndexOfAnyExceptInRange('0', '9') < 0;
}
