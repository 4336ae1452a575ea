using System.Globalization;

namespace KvAdaQuant.Grammar;

/// <summary>The GBNF text to rules (see <see cref="GbnfGrammar"/>); then the checks: defined, root, left recursion.</summary>
internal sealed class GbnfParser
{
    private const int MaxRepetition = 2000; // llama.cpp's MAX_REPETITION_THRESHOLD

    private readonly string _s;
    private readonly List<RuleDef> _rules = [];
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private int _p;

    public GbnfParser(string text) => _s = text;

    public GbnfGrammar Parse(string root)
    {
        SkipSpace(newlines: true);
        if (_p >= _s.Length)
        {
            throw new GrammarException("the grammar is empty: no rules (write at least 'root ::= ...')");
        }

        while (_p < _s.Length)
        {
            int start = _p;
            if (!IsWordChar(_s[_p]))
            {
                throw Error(_p, $"expected a rule name ([a-zA-Z0-9-]+), found {Found(_p)}");
            }

            string name = ParseName();
            SkipSpace(newlines: false);
            if (string.CompareOrdinal(_s, _p, "::=", 0, 3) != 0)
            {
                throw Error(_p, $"expected '::=' after the rule name '{name}', found {Found(_p)}", name);
            }

            _p += 3;
            SkipSpace(newlines: true);
            int id = Id(name, start);
            var rule = _rules[id];
            if (rule.Defined)
            {
                var (l, c) = LineColumn(rule.DefinedAt);
                throw Error(start, $"rule '{name}' is defined twice (first at line {l}, column {c})", name);
            }

            rule.Defined = true;
            rule.DefinedAt = start;
            rule.Alternatives = ParseAlternatives(name, nested: false);
            if (_p < _s.Length && _s[_p] is not ('\r' or '\n'))
            {
                throw Error(_p, _s[_p] == ')' ? $"')' without a matching '(' in rule '{name}'" : $"unexpected {Found(_p)} in rule '{name}'", name);
            }

            SkipSpace(newlines: true);
        }

        foreach (var rule in _rules)
        {
            if (!rule.Defined)
            {
                throw Error(rule.FirstReference, $"undefined rule '{rule.Name}' (referenced in rule '{rule.ReferencedIn}')", rule.ReferencedIn);
            }
        }

        if (!_ids.TryGetValue(root, out int rootId))
        {
            throw new GrammarException($"missing root rule: the grammar defines no rule '{root}' (the start rule; defined: {string.Join(", ", _rules.Where(r => !r.Generated).Select(r => r.Name))})", rule: root);
        }

        CheckLeftRecursion();
        return GbnfGrammar.Build(root, rootId, _rules);
    }

    private List<List<Element>> ParseAlternatives(string rule, bool nested)
    {
        var alternatives = new List<List<Element>> { ParseSequence(rule, nested) };
        while (_p < _s.Length && _s[_p] == '|')
        {
            _p++;
            SkipSpace(newlines: true);
            alternatives.Add(ParseSequence(rule, nested));
        }

        return alternatives;
    }

    private List<Element> ParseSequence(string rule, bool nested)
    {
        var seq = new List<Element>();
        int last = -1; // where the last item's elements start in seq
        while (_p < _s.Length)
        {
            char c = _s[_p];
            int at = _p;
            if (c == '"')
            {
                last = seq.Count;
                _p++;
                while (true)
                {
                    if (_p >= _s.Length || _s[_p] is '\r' or '\n')
                    {
                        throw Error(at, $"unterminated string literal in rule '{rule}' (no closing '\"' on its line)", rule);
                    }

                    if (_s[_p] == '"')
                    {
                        _p++;
                        break;
                    }

                    int cp = ParseChar(rule);
                    seq.Add(Element.Chars([cp, cp]));
                }
            }
            else if (c == '[')
            {
                last = seq.Count;
                seq.Add(Element.Chars(ParseClass(rule)));
            }
            else if (c == '.')
            {
                last = seq.Count;
                _p++;
                seq.Add(Element.Chars([0, GbnfGrammar.MaxCodePoint]));
            }
            else if (IsWordChar(c))
            {
                last = seq.Count;
                string name = ParseName();
                seq.Add(Element.RuleRef(Id(name, at, rule)));
            }
            else if (c == '(')
            {
                last = seq.Count;
                _p++;
                SkipSpace(newlines: true);
                int sub = Generated(rule);
                var alternatives = ParseAlternatives(rule, nested: true);
                _rules[sub].Alternatives = alternatives;
                if (_p >= _s.Length || _s[_p] != ')')
                {
                    throw Error(at, $"unclosed '(' in rule '{rule}' (expected ')' at {Where(_p)}, found {Found(_p)})", rule);
                }

                _p++;
                seq.Add(Element.RuleRef(sub));
            }
            else if (c is '*' or '+' or '?')
            {
                if (last < 0)
                {
                    throw Error(at, $"'{c}' has no item before it to repeat in rule '{rule}'", rule);
                }

                _p++;
                Repeat(seq, last, c == '+' ? 1 : 0, c == '?' ? 1 : -1, rule);
            }
            else if (c == '{')
            {
                if (last < 0)
                {
                    throw Error(at, $"'{{' has no item before it to repeat in rule '{rule}'", rule);
                }

                _p++;
                SkipSpace(newlines: false);
                int min = ParseInt(rule, at);
                int max = min;
                SkipSpace(newlines: false);
                if (_p < _s.Length && _s[_p] == ',')
                {
                    _p++;
                    SkipSpace(newlines: false);
                    max = _p < _s.Length && char.IsAsciiDigit(_s[_p]) ? ParseInt(rule, at) : -1;
                    SkipSpace(newlines: false);
                }

                if (_p >= _s.Length || _s[_p] != '}')
                {
                    throw Error(_p, $"bad repetition in rule '{rule}': expected '}}' closing the '{{' at {Where(at)}, found {Found(_p)}", rule);
                }

                _p++;
                if (max >= 0 && max < min)
                {
                    throw Error(at, $"bad repetition bounds {{{min},{max}}} in rule '{rule}': the maximum is below the minimum", rule);
                }

                if (min > MaxRepetition || max > MaxRepetition)
                {
                    throw Error(at, $"bad repetition bounds in rule '{rule}': at most {MaxRepetition} repetitions (as llama.cpp)", rule);
                }

                Repeat(seq, last, min, max, rule);
            }
            else
            {
                break;
            }

            SkipSpace(newlines: nested);
        }

        return seq;
    }

    // The last item seq[last..] repeated min times, then up to max - min optional ones (nested, as llama.cpp), or any
    // number more (max -1) through a generated rule R ::= item R | ε.
    private void Repeat(List<Element> seq, int last, int min, int max, string rule)
    {
        var item = seq.GetRange(last, seq.Count - last);
        if (item.Count == 0)
        {
            return; // "" repeated is still ""
        }

        seq.RemoveRange(last, seq.Count - last);
        for (int i = 0; i < min; i++)
        {
            seq.AddRange(item);
        }

        if (max < 0)
        {
            int r = Generated(rule);
            _rules[r].Alternatives = [[.. item, Element.RuleRef(r)], []];
            seq.Add(Element.RuleRef(r));
        }
        else if (max > min)
        {
            int inner = -1;
            for (int i = 0; i < max - min; i++)
            {
                int r = Generated(rule);
                _rules[r].Alternatives = [inner < 0 ? [.. item] : [.. item, Element.RuleRef(inner)], []];
                inner = r;
            }

            seq.Add(Element.RuleRef(inner));
        }
    }

    private int[] ParseClass(string rule)
    {
        int at = _p;
        _p++;
        bool negated = _p < _s.Length && _s[_p] == '^';
        if (negated)
        {
            _p++;
        }

        var ranges = new List<(int Lo, int Hi)>();
        while (true)
        {
            if (_p >= _s.Length || _s[_p] is '\r' or '\n')
            {
                throw Error(at, $"unterminated character class in rule '{rule}' (no closing ']' on its line)", rule);
            }

            if (_s[_p] == ']')
            {
                _p++;
                break;
            }

            int charAt = _p;
            int lo = ParseChar(rule);
            int hi = lo;
            if (_p + 1 < _s.Length && _s[_p] == '-' && _s[_p + 1] != ']')
            {
                _p++;
                if (_p >= _s.Length || _s[_p] is '\r' or '\n')
                {
                    throw Error(at, $"unterminated character class in rule '{rule}' (no closing ']' on its line)", rule);
                }

                hi = ParseChar(rule);
                if (hi < lo)
                {
                    throw Error(charAt, $"bad range {GbnfGrammar.Describe(lo)}-{GbnfGrammar.Describe(hi)} in a character class of rule '{rule}': the end is below the start", rule);
                }
            }

            ranges.Add((lo, hi));
        }

        ranges.Sort();
        var merged = new List<int>();
        foreach (var (lo, hi) in ranges)
        {
            if (merged.Count > 0 && lo <= merged[^1] + 1)
            {
                merged[^1] = Math.Max(merged[^1], hi);
            }
            else
            {
                merged.Add(lo);
                merged.Add(hi);
            }
        }

        if (!negated)
        {
            return [.. merged];
        }

        var complement = new List<int>();
        int next = 0;
        for (int i = 0; i < merged.Count; i += 2)
        {
            if (merged[i] > next)
            {
                complement.Add(next);
                complement.Add(merged[i] - 1);
            }

            next = merged[i + 1] + 1;
        }

        if (next <= GbnfGrammar.MaxCodePoint)
        {
            complement.Add(next);
            complement.Add(GbnfGrammar.MaxCodePoint);
        }

        return [.. complement];
    }

    // One character of a literal or class, escapes decoded, as a code point.
    private int ParseChar(string rule)
    {
        int at = _p;
        char c = _s[_p];
        if (c != '\\')
        {
            if (char.IsHighSurrogate(c) && _p + 1 < _s.Length && char.IsLowSurrogate(_s[_p + 1]))
            {
                _p += 2;
                return char.ConvertToUtf32(c, _s[_p - 1]);
            }

            _p++;
            return c;
        }

        if (_p + 1 >= _s.Length)
        {
            throw Error(at, $"bad escape in rule '{rule}': '\\' at the end of the grammar", rule);
        }

        char e = _s[_p + 1];
        _p += 2;
        switch (e)
        {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case '\\' or '"' or '[' or ']' or '-': return e;
            case 'x': return Hex(2, at, rule);
            case 'u': return Hex(4, at, rule);
            case 'U': return Hex(8, at, rule);
            default:
                throw Error(at, $"bad escape '\\{e}' in rule '{rule}' (known: \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH)", rule);
        }
    }

    private int Hex(int digits, int at, string rule)
    {
        if (_p + digits > _s.Length || !int.TryParse(_s.AsSpan(_p, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v) || _s.AsSpan(_p, digits).ContainsAny("+- "))
        {
            throw Error(at, $"bad escape '{_s[at.._p]}' in rule '{rule}': expected {digits} hex digits", rule);
        }

        _p += digits;
        if (v is < 0 or > GbnfGrammar.MaxCodePoint)
        {
            throw Error(at, $"bad escape '{_s[at.._p]}' in rule '{rule}': beyond the last code point U+10FFFF", rule);
        }

        return v;
    }

    private int ParseInt(string rule, int braceAt)
    {
        int start = _p;
        while (_p < _s.Length && char.IsAsciiDigit(_s[_p]))
        {
            _p++;
        }

        if (_p == start)
        {
            throw Error(_p, $"bad repetition in rule '{rule}': expected a number after the '{{' at {Where(braceAt)}, found {Found(_p)}", rule);
        }

        return int.TryParse(_s.AsSpan(start, _p - start), NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v
            : throw Error(start, $"bad repetition bounds in rule '{rule}': at most {MaxRepetition} repetitions (as llama.cpp)", rule);
    }

    private string ParseName()
    {
        int start = _p;
        while (_p < _s.Length && IsWordChar(_s[_p]))
        {
            _p++;
        }

        return _s[start.._p];
    }

    private void SkipSpace(bool newlines)
    {
        while (_p < _s.Length)
        {
            char c = _s[_p];
            if (c is ' ' or '\t' || (newlines && c is '\r' or '\n'))
            {
                _p++;
            }
            else if (c == '#')
            {
                while (_p < _s.Length && _s[_p] is not ('\r' or '\n'))
                {
                    _p++;
                }
            }
            else
            {
                break;
            }
        }
    }

    private static bool IsWordChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '-';

    private int Id(string name, int at, string? referencedIn = null)
    {
        if (!_ids.TryGetValue(name, out int id))
        {
            id = _rules.Count;
            _ids[name] = id;
            _rules.Add(new RuleDef(name) { FirstReference = at, ReferencedIn = referencedIn ?? name });
        }

        return id;
    }

    private int Generated(string parent)
    {
        string name;
        do
        {
            name = $"{parent}_{_rules.Count}";
        }
        while (_ids.ContainsKey(name));

        int id = _rules.Count;
        _ids[name] = id;
        _rules.Add(new RuleDef(name) { Defined = true, DefinedAt = _p, Generated = true, Parent = parent });
        return id;
    }

    // Left recursion: a rule that can reach itself without consuming a character (through rules that can be empty).
    private void CheckLeftRecursion()
    {
        int n = _rules.Count;
        var nullable = new bool[n];
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int r = 0; r < n; r++)
            {
                if (!nullable[r] && _rules[r].Alternatives.Any(a => a.All(e => e.Kind == GbnfGrammar.Ref && nullable[e.Value])))
                {
                    nullable[r] = changed = true;
                }
            }
        }

        var edges = new List<int>[n];
        for (int r = 0; r < n; r++)
        {
            edges[r] = [];
            foreach (var alt in _rules[r].Alternatives)
            {
                foreach (var e in alt)
                {
                    if (e.Kind != GbnfGrammar.Ref)
                    {
                        break;
                    }

                    edges[r].Add(e.Value);
                    if (!nullable[e.Value])
                    {
                        break;
                    }
                }
            }
        }

        var state = new byte[n]; // 0 unvisited, 1 on the path, 2 done
        var path = new List<int>();
        for (int r = 0; r < n; r++)
        {
            if (state[r] == 0 && FindCycle(r, edges, state, path) is { } cycle)
            {
                var named = cycle.Select(i => _rules[i]).Select(x => x.Generated ? x.Parent! : x.Name).Distinct().ToList();
                string rule = named[0];
                var def = _rules[_ids[rule]];
                string through = named.Count > 1 ? $" (through {string.Join(" -> ", named)} -> {rule})" : string.Empty;
                throw Error(def.DefinedAt, $"rule '{rule}' is left-recursive{through}: it can reach itself before matching a character, which GBNF (as llama.cpp) refuses; write the repetition with * or + instead, e.g. expr ::= term (\"+\" term)*", rule);
            }
        }
    }

    private static List<int>? FindCycle(int r, List<int>[] edges, byte[] state, List<int> path)
    {
        state[r] = 1;
        path.Add(r);
        foreach (int next in edges[r])
        {
            if (state[next] == 1)
            {
                return path[path.IndexOf(next)..];
            }

            if (state[next] == 0 && FindCycle(next, edges, state, path) is { } cycle)
            {
                return cycle;
            }
        }

        path.RemoveAt(path.Count - 1);
        state[r] = 2;
        return null;
    }

    private (int Line, int Column) LineColumn(int pos)
    {
        int line = 1, col = 1;
        for (int i = 0; i < pos && i < _s.Length; i++)
        {
            if (_s[i] == '\n')
            {
                line++;
                col = 1;
            }
            else if (_s[i] != '\r')
            {
                col++;
            }
        }

        return (line, col);
    }

    private string Where(int pos)
    {
        var (l, c) = LineColumn(pos);
        return $"line {l}, column {c}";
    }

    private string Found(int pos) => pos >= _s.Length ? "the end of the grammar" : _s[pos] switch
    {
        '\n' or '\r' => "the end of the line",
        var ch => $"'{ch}'",
    };

    private GrammarException Error(int pos, string message, string? rule = null)
    {
        var (l, c) = LineColumn(pos);
        return new GrammarException(message, l, c, rule);
    }

    internal readonly record struct Element(byte Kind, int Value, int[]? Set)
    {
        public static Element Chars(int[] set) => new(GbnfGrammar.Char, 0, set);

        public static Element RuleRef(int rule) => new(GbnfGrammar.Ref, rule, null);
    }

    internal sealed class RuleDef(string name)
    {
        public string Name { get; } = name;

        public List<List<Element>> Alternatives { get; set; } = [];

        public bool Defined { get; set; }

        public int DefinedAt { get; set; }

        public int FirstReference { get; set; }

        public string ReferencedIn { get; set; } = name;

        public bool Generated { get; set; }

        public string? Parent { get; set; }
    }
}
