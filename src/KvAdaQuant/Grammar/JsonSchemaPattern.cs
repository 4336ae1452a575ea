using System.Globalization;
using System.Text;

namespace KvAdaQuant.Grammar;

/// <summary>
/// A JSON Schema <c>pattern</c> (an ECMA-262 regular expression) turned into GBNF for the JSON-encoded contents of a string.
/// The subset: literals and escapes, classes (ranges, negation, <c>\d \w \s</c> and their negations), <c>.</c>,
/// <c>* + ? {m} {m,} {m,n}</c> (lazy forms too: the same language), groups <c>( )</c> and <c>(?: )</c>, alternation,
/// <c>^</c> at the start and <c>$</c> at the end (an unanchored side lets any characters through, as a regex search does).
/// Anything else (backreferences, lookaround, word boundaries, named groups, anchors elsewhere) is refused.
/// Characters that JSON must escape are spelled with their escape when a literal or a positive class names them;
/// <c>.</c> and negated classes match only characters written raw.
/// </summary>
internal sealed class JsonSchemaPattern
{
    /// <summary>The raw-character class for <c>.</c> and negated classes: anything JSON lets through unescaped.</summary>
    private const string RawExclusions = "\"\\\\\\x00-\\x1F";

    private readonly string _pattern;
    private readonly string _path;
    private int _pos;

    private JsonSchemaPattern(string pattern, string path)
    {
        _pattern = pattern;
        _path = path;
    }

    /// <summary>GBNF for the string contents (between the quotes); <paramref name="anyChar"/> is the rule name for one JSON string character.</summary>
    public static string ToGbnf(string pattern, string path, string anyChar)
    {
        var p = new JsonSchemaPattern(pattern, path);
        return p.Convert(anyChar);
    }

    private string Convert(string anyChar)
    {
        bool startAnchor = _pattern.StartsWith('^');
        bool endAnchor = _pattern.EndsWith('$') && !EscapedAt(_pattern.Length - 1);
        int start = startAnchor ? 1 : 0;
        int end = endAnchor ? _pattern.Length - 1 : _pattern.Length;
        if (end < start)
        {
            end = start;
        }

        _pos = start;
        var branches = ParseAlternatives(end);
        if (_pos != end)
        {
            throw Refuse($"unexpected \"{_pattern[_pos]}\" at offset {_pos}");
        }

        if (branches.Count > 1 && (startAnchor || endAnchor))
        {
            throw Refuse("\"^\" or \"$\" around a top-level \"|\" is not supported (group the alternatives: ^(a|b)$)");
        }

        string body = Alternation(branches);
        if (startAnchor && endAnchor)
        {
            return body;
        }

        var parts = new List<string>();
        if (!startAnchor)
        {
            parts.Add(anyChar + "*");
        }

        if (body.Length > 0)
        {
            parts.Add(JsonSchemaGbnfText.Group(body));
        }

        if (!endAnchor)
        {
            parts.Add(anyChar + "*");
        }

        return string.Join(" ", parts);
    }

    private static int CodePointAt(string s, int i, out int width)
    {
        if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            width = 2;
            return char.ConvertToUtf32(s[i], s[i + 1]);
        }

        width = 1;
        return s[i];
    }

    private bool EscapedAt(int index)
    {
        int backslashes = 0;
        for (int i = index - 1; i >= 0 && _pattern[i] == '\\'; i--)
        {
            backslashes++;
        }

        return backslashes % 2 == 1;
    }

    private JsonSchemaException Refuse(string problem) =>
        new(_path, $"pattern {Quote(_pattern)}: {problem}");

    private static string Quote(string s) => "\"" + JsonSchemaGbnfText.JsonEscape(s) + "\"";

    private static string Alternation(List<string> branches)
    {
        if (branches.Count == 1)
        {
            return branches[0];
        }

        return string.Join(" | ", branches.Select(b => b.Length == 0 ? "\"\"" : b));
    }

    private List<string> ParseAlternatives(int end)
    {
        var branches = new List<string> { ParseSequence(end) };
        while (_pos < end && _pattern[_pos] == '|')
        {
            _pos++;
            branches.Add(ParseSequence(end));
        }

        return branches;
    }

    private string ParseSequence(int end)
    {
        var items = new List<string>();
        var literal = new StringBuilder();
        while (_pos < end && _pattern[_pos] != '|' && _pattern[_pos] != ')')
        {
            var (item, isChar) = ParseAtom(end);
            var quantifier = ParseQuantifier(end);
            if (quantifier is null && isChar is not null)
            {
                literal.Append(isChar);
                continue;
            }

            if (literal.Length > 0)
            {
                items.Add(JsonSchemaGbnfText.Literal(literal.ToString()));
                literal.Clear();
            }

            if (quantifier is { } q)
            {
                string repeated = JsonSchemaGbnfText.Repeat(item, q.Min, q.Max);
                if (repeated.Length > 0)
                {
                    items.Add(repeated);
                }
            }
            else if (item.Length > 0)
            {
                items.Add(JsonSchemaGbnfText.Group(item));
            }
        }

        if (literal.Length > 0)
        {
            items.Add(JsonSchemaGbnfText.Literal(literal.ToString()));
        }

        return string.Join(" ", items);
    }

    /// <summary>One atom: its GBNF, and for a single literal character its JSON spelling (so runs merge into one literal).</summary>
    private (string Gbnf, string? Char) ParseAtom(int end)
    {
        char c = _pattern[_pos];
        switch (c)
        {
            case '(':
                {
                    int at = _pos;
                    _pos++;
                    if (_pos < end && _pattern[_pos] == '?')
                    {
                        if (_pos + 1 < end && _pattern[_pos + 1] == ':')
                        {
                            _pos += 2;
                        }
                        else
                        {
                            throw Refuse($"\"(?\" groups other than \"(?:\" (lookaround, named groups) are not supported (offset {at})");
                        }
                    }

                    var branches = ParseAlternatives(end);
                    if (_pos >= end || _pattern[_pos] != ')')
                    {
                        throw Refuse($"unclosed \"(\" at offset {at}");
                    }

                    _pos++;
                    string body = Alternation(branches);
                    return (body.Length == 0 ? "\"\"" : $"( {body} )", null);
                }

            case ')':
                throw Refuse($"unmatched \")\" at offset {_pos}");
            case '[':
                return (ParseClass(end), null);
            case '.':
                _pos++;
                return ($"[^{RawExclusions}]", null);
            case '^':
            case '$':
                throw Refuse($"\"{c}\" is only supported at the start (^) or the end ($) of the pattern (offset {_pos})");
            case '*':
            case '+':
            case '?':
            case '{':
                if (c == '{' && !LooksLikeQuantifier(_pos, end))
                {
                    _pos++;
                    return (JsonSchemaGbnfText.Literal("{"), "{");
                }

                throw Refuse($"quantifier \"{c}\" with nothing to repeat at offset {_pos}");
            case '\\':
                return ParseEscape(end);
            default:
                {
                    int cp = CodePointAt(_pattern, _pos, out int width);
                    _pos += width;
                    string text = char.ConvertFromUtf32(cp);
                    string json = cp < 0x10000 ? JsonSchemaGbnfText.JsonEscape((char)cp) : text;
                    return (JsonSchemaGbnfText.Literal(json), json);
                }
        }
    }

    private (string Gbnf, string? Char) ParseEscape(int end)
    {
        int at = _pos;
        _pos++;
        if (_pos >= end)
        {
            throw Refuse("trailing \"\\\"");
        }

        char e = _pattern[_pos];
        if (ClassEscape(e) is { } set)
        {
            _pos++;
            return (ClassGbnf(set.Ranges, set.Negated), null);
        }

        int cp = ParseCharEscape(end, at);
        string json = cp < 0x10000 ? JsonSchemaGbnfText.JsonEscape((char)cp) : char.ConvertFromUtf32(cp);
        return (JsonSchemaGbnfText.Literal(json), json);
    }

    /// <summary>The code point of a character escape at <see cref="_pos"/> (just past the backslash); advances past it.</summary>
    private int ParseCharEscape(int end, int at)
    {
        char e = _pattern[_pos];
        _pos++;
        switch (e)
        {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case 'f': return '\f';
            case 'v': return '\v';
            case '0': return 0;
            case 'x': return Hex(2, end, at);
            case 'u': return Hex(4, end, at);
            default:
                if (char.IsAsciiLetterOrDigit(e))
                {
                    throw Refuse($"escape \"\\{e}\" is not supported (offset {at})");
                }

                return e;
        }
    }

    private int Hex(int digits, int end, int at)
    {
        if (_pos + digits > end || !int.TryParse(_pattern.AsSpan(_pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v))
        {
            throw Refuse($"bad hexadecimal escape at offset {at}");
        }

        _pos += digits;
        return v;
    }

    private static (List<(int Lo, int Hi)> Ranges, bool Negated)? ClassEscape(char e) => e switch
    {
        'd' => ([('0', '9')], false),
        'D' => ([('0', '9')], true),
        'w' => (Word(), false),
        'W' => (Word(), true),
        's' => (Space(), false),
        'S' => (Space(), true),
        _ => null,
    };

    private static List<(int Lo, int Hi)> Word() => [('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];

    private static List<(int Lo, int Hi)> Space() => [('\t', '\r'), (' ', ' '), (0xA0, 0xA0), (0xFEFF, 0xFEFF), (0x2028, 0x2029)];

    private string ParseClass(int end)
    {
        int at = _pos;
        _pos++;
        bool negated = false;
        if (_pos < end && _pattern[_pos] == '^')
        {
            negated = true;
            _pos++;
        }

        var ranges = new List<(int Lo, int Hi)>();
        bool first = true;
        while (true)
        {
            if (_pos >= end)
            {
                throw Refuse($"unclosed \"[\" at offset {at}");
            }

            char c = _pattern[_pos];
            if (c == ']' && !first)
            {
                _pos++;
                break;
            }

            first = false;
            int lo;
            if (c == '\\')
            {
                int escAt = _pos;
                _pos++;
                if (_pos >= end)
                {
                    throw Refuse($"unclosed \"[\" at offset {at}");
                }

                if (ClassEscape(_pattern[_pos]) is { } set)
                {
                    if (set.Negated)
                    {
                        throw Refuse($"\"\\{_pattern[_pos]}\" inside a class is not supported (offset {escAt})");
                    }

                    _pos++;
                    ranges.AddRange(set.Ranges);
                    continue;
                }

                lo = _pattern[_pos] == 'b' ? ClassBackspace() : ParseCharEscape(end, escAt);
            }
            else
            {
                lo = CodePointAt(_pattern, _pos, out int width);
                _pos += width;
            }

            int hi = lo;
            if (_pos + 1 < end && _pattern[_pos] == '-' && _pattern[_pos + 1] != ']')
            {
                _pos++;
                char d = _pattern[_pos];
                if (d == '\\')
                {
                    int escAt = _pos;
                    _pos++;
                    if (_pos >= end || ClassEscape(_pattern[_pos]) is not null)
                    {
                        throw Refuse($"bad class range at offset {escAt}");
                    }

                    hi = _pattern[_pos] == 'b' ? ClassBackspace() : ParseCharEscape(end, escAt);
                }
                else
                {
                    hi = CodePointAt(_pattern, _pos, out int width);
                    _pos += width;
                }

                if (hi < lo)
                {
                    throw Refuse($"class range out of order at offset {at}");
                }
            }

            ranges.Add((lo, hi));
        }

        return ClassGbnf(ranges, negated);
    }

    private int ClassBackspace()
    {
        _pos++;
        return '\b';
    }

    private bool LooksLikeQuantifier(int at, int end)
    {
        int i = at + 1;
        int digits = 0;
        while (i < end && char.IsAsciiDigit(_pattern[i]))
        {
            i++;
            digits++;
        }

        if (digits == 0)
        {
            return false;
        }

        if (i < end && _pattern[i] == ',')
        {
            i++;
            while (i < end && char.IsAsciiDigit(_pattern[i]))
            {
                i++;
            }
        }

        return i < end && _pattern[i] == '}';
    }

    private (int Min, int? Max)? ParseQuantifier(int end)
    {
        if (_pos >= end)
        {
            return null;
        }

        char c = _pattern[_pos];
        (int, int?) q;
        switch (c)
        {
            case '*': q = (0, null); _pos++; break;
            case '+': q = (1, null); _pos++; break;
            case '?': q = (0, 1); _pos++; break;
            case '{' when LooksLikeQuantifier(_pos, end):
                {
                    int close = _pattern.IndexOf('}', _pos);
                    string inner = _pattern[(_pos + 1)..close];
                    int comma = inner.IndexOf(',');
                    int min = int.Parse(comma < 0 ? inner : inner[..comma], CultureInfo.InvariantCulture);
                    int? max = comma < 0 ? min : comma == inner.Length - 1 ? null : int.Parse(inner[(comma + 1)..], CultureInfo.InvariantCulture);
                    if (max < min)
                    {
                        throw Refuse($"quantifier {{{inner}}} out of order at offset {_pos}");
                    }

                    _pos = close + 1;
                    q = (min, max);
                    break;
                }

            default:
                return null;
        }

        if (_pos < end && _pattern[_pos] == '?')
        {
            _pos++; // lazy: the same set of matching strings
        }
        else if (_pos < end && (_pattern[_pos] is '*' or '+' || (_pattern[_pos] == '{' && LooksLikeQuantifier(_pos, end))))
        {
            throw Refuse($"a quantifier after a quantifier at offset {_pos} is not supported");
        }

        return q;
    }

    /// <summary>
    /// GBNF for one character of a set, in its JSON spelling: a positive set's characters that JSON escapes become their escapes;
    /// a negated set matches only raw characters.
    /// </summary>
    private string ClassGbnf(List<(int Lo, int Hi)> ranges, bool negated)
    {
        if (ranges.Any(r => r.Hi >= 0x10000 && r.Lo < 0x10000))
        {
            throw Refuse("a class range across U+FFFF is not supported");
        }

        var sorted = Normalize(ranges);
        if (negated)
        {
            var sb = new StringBuilder("[^");
            foreach (var (lo, hi) in sorted)
            {
                AppendRange(sb, lo, hi);
            }

            return sb.Append(RawExclusions).Append(']').ToString();
        }

        var raw = new List<(int Lo, int Hi)>();
        var escaped = new List<string>();
        foreach (var (lo, hi) in sorted)
        {
            int a = -1;
            for (int c = lo; c <= Math.Min(hi, '\\'); c++)
            {
                if (c < 0x20 || c == '"' || c == '\\')
                {
                    if (a >= 0)
                    {
                        raw.Add((a, c - 1));
                        a = -1;
                    }

                    escaped.Add(JsonSchemaGbnfText.Literal(JsonSchemaGbnfText.JsonEscape((char)c)));
                }
                else if (a < 0)
                {
                    a = c;
                }
            }

            if (hi > '\\')
            {
                raw.Add((a >= 0 ? a : Math.Max(lo, '\\' + 1), hi));
            }
            else if (a >= 0)
            {
                raw.Add((a, hi));
            }
        }

        var alternatives = new List<string>();
        if (raw.Count > 0)
        {
            var sb = new StringBuilder("[");
            foreach (var (lo, hi) in raw)
            {
                AppendRange(sb, lo, hi);
            }

            alternatives.Add(sb.Append(']').ToString());
        }

        alternatives.AddRange(escaped);
        if (alternatives.Count == 0)
        {
            throw Refuse("an empty class matches nothing");
        }

        return alternatives.Count == 1 ? alternatives[0] : "( " + string.Join(" | ", alternatives) + " )";
    }

    private static List<(int Lo, int Hi)> Normalize(List<(int Lo, int Hi)> ranges)
    {
        var sorted = ranges.OrderBy(r => r.Lo).ThenBy(r => r.Hi).ToList();
        var merged = new List<(int Lo, int Hi)>();
        foreach (var r in sorted)
        {
            if (merged.Count > 0 && r.Lo <= merged[^1].Hi + 1)
            {
                merged[^1] = (merged[^1].Lo, Math.Max(merged[^1].Hi, r.Hi));
            }
            else
            {
                merged.Add(r);
            }
        }

        return merged;
    }

    private static void AppendRange(StringBuilder sb, int lo, int hi)
    {
        sb.Append(JsonSchemaGbnfText.ClassChar(lo));
        if (hi != lo)
        {
            sb.Append('-').Append(JsonSchemaGbnfText.ClassChar(hi));
        }
    }
}
