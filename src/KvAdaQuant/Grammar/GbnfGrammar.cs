using System.Globalization;

namespace KvAdaQuant.Grammar;

/// <summary>
/// A grammar in llama.cpp's GBNF syntax (its <c>grammars/README.md</c>), parsed and checked: rules
/// <c>name ::= alternatives</c> (names <c>[a-zA-Z0-9-]+</c>, in any order, referenced before or after they are defined),
/// alternatives <c>|</c>, sequences, groups <c>( )</c>, string literals <c>"..."</c>, character classes <c>[a-z0-9_]</c>
/// and <c>[^...]</c>, any character <c>.</c>, repetition <c>*</c> <c>+</c> <c>?</c> <c>{m}</c> <c>{m,}</c> <c>{m,n}</c>,
/// comments <c>#</c> to the end of the line; a rule may go on over several lines inside parentheses and after <c>|</c>.
/// Escapes in literals and classes: <c>\n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH</c>. The grammar works on
/// Unicode code points. Repetition expands as llama.cpp's does (<c>x{2,4}</c> is <c>x x (x (x)?)?</c>, through
/// generated rules). Left recursion (<c>expr ::= expr "+" term</c>) is refused, as llama.cpp refuses it.
/// </summary>
public sealed class GbnfGrammar
{
    internal const int MaxCodePoint = 0x10FFFF;

    // Element kinds of the flattened rules.
    internal const byte End = 0;
    internal const byte Char = 1;
    internal const byte Ref = 2;

    private GbnfGrammar(string root, string[] ruleNames, int rootRule, byte[] kinds, int[] values, int[][] alternatives, int[][] charSets)
    {
        Root = root;
        RuleNames = ruleNames;
        RootRule = rootRule;
        Kinds = kinds;
        Values = values;
        Alternatives = alternatives;
        CharSets = charSets;
    }

    /// <summary>The start rule's name.</summary>
    public string Root { get; }

    /// <summary>Number of rules, those written and those generated for groups and repetitions.</summary>
    public int RuleCount => RuleNames.Length;

    internal string[] RuleNames { get; }

    internal int RootRule { get; }

    // The rules flattened: each alternative's elements one after another, ended by End. A Char element's value indexes
    // CharSets, a Ref element's the rule it refers to.
    internal byte[] Kinds { get; }

    internal int[] Values { get; }

    // Per rule, where each alternative starts in Kinds/Values.
    internal int[][] Alternatives { get; }

    // Per character element, sorted disjoint inclusive ranges lo0, hi0, lo1, hi1, ... (negated classes complemented).
    internal int[][] CharSets { get; }

    /// <summary>
    /// Parses <paramref name="text"/>, the start rule being <paramref name="root"/>. Throws <see cref="GrammarException"/>
    /// naming the line, column and rule of the first problem: an empty grammar, a missing start rule, a rule defined
    /// twice, an undefined rule, an unterminated literal, class or group, an unknown escape, bad repetition bounds, left
    /// recursion.
    /// </summary>
    public static GbnfGrammar Parse(string text, string root = "root")
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(root);
        var grammar = new GbnfParser(text).Parse(root);
        _ = new GrammarStacks(grammar); // the start expanded once: a grammar too ambiguous to begin is refused here
        return grammar;
    }

    /// <summary>Whether the whole of <paramref name="text"/> is a sentence of the grammar.</summary>
    public bool Matches(string text)
    {
        var matcher = new GrammarMatcher(this);
        return matcher.TryAccept(text) && matcher.IsComplete;
    }

    internal static GbnfGrammar Build(string root, int rootRule, List<GbnfParser.RuleDef> rules)
    {
        var kinds = new List<byte>();
        var values = new List<int>();
        var charSets = new List<int[]>();
        var alternatives = new int[rules.Count][];
        for (int r = 0; r < rules.Count; r++)
        {
            var alts = rules[r].Alternatives;
            alternatives[r] = new int[alts.Count];
            for (int a = 0; a < alts.Count; a++)
            {
                alternatives[r][a] = kinds.Count;
                foreach (var e in alts[a])
                {
                    kinds.Add(e.Kind);
                    if (e.Kind == Char)
                    {
                        values.Add(charSets.Count);
                        charSets.Add(e.Set!);
                    }
                    else
                    {
                        values.Add(e.Value);
                    }
                }

                kinds.Add(End);
                values.Add(0);
            }
        }

        return new GbnfGrammar(root, rules.Select(r => r.Name).ToArray(), rootRule, [.. kinds], [.. values], alternatives, [.. charSets]);
    }

    internal static bool SetContains(int[] set, int cp)
    {
        // Binary search over the ranges' lower ends.
        int lo = 0, hi = (set.Length / 2) - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (cp < set[2 * mid])
            {
                hi = mid - 1;
            }
            else if (cp > set[(2 * mid) + 1])
            {
                lo = mid + 1;
            }
            else
            {
                return true;
            }
        }

        return false;
    }

    internal static bool SetIntersects(int[] set, int from, int to)
    {
        for (int i = 0; i < set.Length; i += 2)
        {
            if (set[i] <= to && set[i + 1] >= from)
            {
                return true;
            }
        }

        return false;
    }

    internal static string Describe(int cp) => cp is >= 0x20 and < 0x7F ? ((char)cp).ToString() : $"U+{cp.ToString("X4", CultureInfo.InvariantCulture)}";
}
