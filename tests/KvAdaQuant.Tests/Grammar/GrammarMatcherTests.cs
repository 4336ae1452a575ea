using System.Text;
using System.Text.RegularExpressions;
using CsCheck;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// The pushdown matcher: accept/reject tables for grammars of several kinds, exact repetition bounds, Unicode classes,
/// UTF-8 split across chunks at every byte, copies, and properties checked against .NET's Regex for regular grammars.
/// </summary>
public class GrammarMatcherTests
{
    private const string Arithmetic = """
        root  ::= expr
        expr  ::= term (("+" | "-") term)*
        term  ::= factor (("*" | "/") factor)*
        factor ::= [0-9]+ | "(" ws expr ws ")" | "-" factor
        ws ::= " "?
        """;

    // llama.cpp's grammars/json.gbnf, in substance.
    private const string Json = """
        root   ::= object
        value  ::= object | array | string | number | ("true" | "false" | "null") ws

        object ::=
          "{" ws (
                    string ":" ws value
            ("," ws string ":" ws value)*
          )? "}" ws

        array  ::=
          "[" ws (
                    value
            ("," ws value)*
          )? "]" ws

        string ::=
          "\"" (
            [^"\\\x7F\x00-\x1F] |
            "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
          )* "\"" ws

        number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

        # Optional space: by convention, applied in this grammar after literal chars when allowed
        ws ::= | " " | "\n" [ \t]{0,20}
        """;

    [Theory]
    [InlineData(Arithmetic, new[] { "1", "1+2", "12*(3-4)", "-5", "( 1+2 )/3", "2*-3" }, new[] { "", "+", "1+", "(1", "1++2", "a", "1 + 2" })]
    [InlineData(Json, new[] { "{}", "{\"a\":1}", "{\"a\": [1, 2.5, -3e4, true, null, \"x\\u00e9\"]}", "{\"k\":{\"n\":{}}}", "{\"é\":\"日本\"}" },
        new[] { "", "[]", "{", "{\"a\"}", "{\"a\":01}", "{\"a\":\"\\q\"}", "{\"a\":1,}", "{\"a\":\"\u0001\"}" })]
    [InlineData("root ::= [^a-z\\u00e9]+", new[] { "ABC", "123", "ü", "日本" }, new[] { "a", "Aé", "" })]
    [InlineData("root ::= [α-ω]{2} \"!\"", new[] { "αβ!", "ωω!" }, new[] { "α!", "ab!", "αβγ!" })]
    [InlineData("root ::= . . .", new[] { "abc", "a😀c", "\u0000\n\t" }, new[] { "ab", "abcd" })]
    public void Accepts_and_rejects_as_the_grammar_says(string grammar, string[] yes, string[] no)
    {
        var g = GbnfGrammar.Parse(grammar);
        Assert.All(yes, s => Assert.True(g.Matches(s), $"should match '{s}'"));
        Assert.All(no, s => Assert.False(g.Matches(s), $"should not match '{s}'"));
    }

    [Fact]
    public void Repetition_bounds_are_exact()
    {
        foreach (var (m, n) in new[] { (0, 0), (0, 3), (2, 2), (2, 5), (1, -1), (3, -1), (0, -1) })
        {
            string bounds = n < 0 ? $"{{{m},}}" : m == n ? $"{{{m}}}" : $"{{{m},{n}}}";
            var g = GbnfGrammar.Parse($"root ::= (\"a\" | \"bc\"){bounds} \"z\"");
            for (int k = 0; k <= 8; k++)
            {
                bool expected = k >= m && (n < 0 || k <= n);
                Assert.True(expected == g.Matches(string.Concat(Enumerable.Repeat("a", k)) + "z"), $"{bounds} with {k}");
                Assert.True(expected == g.Matches(string.Concat(Enumerable.Range(0, k).Select(i => i % 2 == 0 ? "bc" : "a")) + "z"), $"{bounds} with {k} mixed");
            }
        }
    }

    [Fact]
    public void Utf8_split_across_chunks_at_every_byte_is_carried_over()
    {
        var g = GbnfGrammar.Parse("root ::= \"x\" [é😀日]+ \"y\"");
        byte[] bytes = Encoding.UTF8.GetBytes("xé😀日éy");
        for (int cut = 0; cut <= bytes.Length; cut++)
        {
            var m = new GrammarMatcher(g);
            Assert.True(m.TryAccept(bytes.AsSpan(0, cut)), $"first {cut} bytes");
            Assert.Equal(cut is 2 or 4 or 5 or 6 or 8 or 9 or 11, m.HasPartialCharacter && !m.IsComplete);
            Assert.True(m.TryAccept(bytes.AsSpan(cut)));
            Assert.True(m.IsComplete);
        }

        // Byte by byte.
        var one = new GrammarMatcher(g);
        Assert.All(bytes, b => Assert.True(one.TryAccept([b])));
        Assert.True(one.IsComplete);
        Assert.False(one.CanContinue);
    }

    [Fact]
    public void A_partial_character_is_allowed_only_while_it_can_still_match()
    {
        var g = GbnfGrammar.Parse("root ::= [é]"); // U+00E9: C3 A9
        var m = new GrammarMatcher(g);
        Assert.False(m.CanAccept([0xE2])); // a three-byte character: none is allowed
        Assert.True(m.CanAccept([0xC3]));
        Assert.False(m.CanAccept([0xC3, 0xA8])); // è
        Assert.False(m.CanAccept([0xC2])); // U+0080..U+00BF
        Assert.False(m.CanAccept([0xA9])); // a stray continuation byte
        Assert.False(m.CanAccept([0xC0, 0x80])); // overlong
        Assert.False(new GrammarMatcher(GbnfGrammar.Parse("root ::= [ -~]")).CanAccept([0xE0])); // only an overlong form of ASCII starts so
        Assert.False(new GrammarMatcher(GbnfGrammar.Parse("root ::= [\\u0100-\\uFFFF]")).CanAccept([0xF0])); // four bytes are U+10000 and up
        Assert.True(new GrammarMatcher(GbnfGrammar.Parse("root ::= [\\u0100-\\uFFFF]")).CanAccept([0xE0]));
        Assert.False(new GrammarMatcher(GbnfGrammar.Parse("root ::= .")).CanAccept([0xED, 0xA0, 0x80])); // a surrogate
        Assert.False(new GrammarMatcher(GbnfGrammar.Parse("root ::= .")).CanAccept([0xED, 0xA0])); // only surrogates start so: a dead end (found against llama.cpp)
        Assert.True(new GrammarMatcher(GbnfGrammar.Parse("root ::= .")).CanAccept([0xED, 0x9F])); // U+D7C0..U+D7FF
        Assert.False(new GrammarMatcher(GbnfGrammar.Parse("root ::= [\uD000-\uDFFF]")).CanAccept([0xED, 0xA0])); // the class's other end is surrogates too
        Assert.True(m.TryAccept([0xC3]));
        Assert.False(m.IsComplete);
        Assert.False(m.TryAccept([0x41])); // refused: stays put
        Assert.True(m.TryAccept([0xA9]));
        Assert.True(m.IsComplete);
    }

    [Fact]
    public void A_refused_input_leaves_the_matcher_as_it_was_and_a_copy_is_independent()
    {
        var m = new GrammarMatcher(GbnfGrammar.Parse("root ::= \"ab\" \"c\"*"));
        Assert.True(m.TryAccept("a"));
        var copy = m.Clone();
        Assert.False(m.TryAccept("ax"));
        Assert.True(m.TryAccept("b"));
        Assert.True(m.IsComplete && m.CanContinue);
        Assert.False(copy.IsComplete);
        Assert.True(copy.TryAccept("bccc"));
        Assert.True(copy.IsComplete);
        m.Reset();
        Assert.False(m.IsComplete);
        Assert.True(m.TryAccept("abc"));
    }

    [Fact]
    public void Deep_repetition_keeps_the_stacks_few()
    {
        // Ambiguous: many ways to split the a's; deduplication keeps the work linear.
        var g = GbnfGrammar.Parse("root ::= (\"a\" | \"aa\" | \"aaa\")* \"b\"");
        var m = new GrammarMatcher(g);
        Assert.True(m.TryAccept(new string('a', 5000)));
        Assert.True(m.TryAccept("b"));
        Assert.True(m.IsComplete);
    }

    [Fact]
    public void Nested_optional_repetitions_are_refused_as_too_ambiguous_instead_of_overflowing_the_stack()
    {
        // Three levels of {0,2000} reach millions of nullable levels at the start: the recursive expansion overflowed the
        // stack (killing kvaq serve); the iterative one stops at MaxExpansion pairs with a GrammarException naming the cause.
        var e = Assert.Throws<GrammarException>(() => GbnfGrammar.Parse("root ::= ((\"a\"{0,2000}){0,2000}){0,2000}"));
        Assert.Contains("too ambiguous", e.Message, StringComparison.Ordinal);

        // One level of nesting of a small group stays within the bounds and matches.
        Assert.True(GbnfGrammar.Parse("root ::= (\"a\"?){0,300} \"b\"").Matches(new string('a', 200) + "b"));
    }

    [Fact]
    public void Right_recursion_as_deep_as_the_text_is_long()
    {
        var g = GbnfGrammar.Parse("root ::= \"a\" root | \"\"");
        var m = new GrammarMatcher(g);
        Assert.True(m.TryAccept(new string('a', 20000)));
        Assert.True(m.IsComplete);
        Assert.True(GbnfGrammar.Parse("root ::= \"\"* \"x\"").Matches("x"));
    }

    // Regular grammars with their regex: a random string's acceptance agrees with .NET's Regex; and strings built to
    // follow the grammar are accepted.
    private static readonly (string Grammar, string Regex, string Alphabet)[] Regular =
    [
        ("root ::= [a-c]* \"d\" [ab]{1,3}", "[a-c]*d[ab]{1,3}", "abcd"),
        ("root ::= (\"ab\" | \"c\")+ (\"d\" | \"\")", "(ab|c)+(d|)", "abcd"),
        ("root ::= [^b]{2,} \"b\"?", "[^b]{2,}b?", "abc"),
        ("root ::= (x \"-\")* x\nx ::= [0-9]{1,2}", "([0-9]{1,2}-)*[0-9]{1,2}", "019-"),
        ("root ::= \"a\"{0,2} \"b\"{2} (\"c\" | \"d\" \"e\"?)?", "a{0,2}b{2}(c|de?)?", "abcde"),
        ("root ::= (. \"x\")*", "(.x)*", "xyé\n"),
    ];

    [Fact]
    public void Random_strings_agree_with_Regex_on_regular_grammars()
    {
        for (int i = 0; i < Regular.Length; i++)
        {
            var (grammar, pattern, alphabet) = Regular[i];
            var g = GbnfGrammar.Parse(grammar);
            var regex = new Regex($@"\A(?:{pattern})\z", RegexOptions.Singleline);
            Gen.Int[0, alphabet.Length - 1].Array[0, 10].Select(ix => new string(ix.Select(j => alphabet[j]).ToArray()))
                .Sample(s => Assert.True(regex.IsMatch(s) == g.Matches(s), $"grammar {i} on '{s}': regex {regex.IsMatch(s)}"), iter: 2000);
        }
    }

    [Fact]
    public void Strings_generated_from_a_grammar_are_accepted_and_a_mutation_agrees_with_Regex()
    {
        // root ::= item ("," item)*, item ::= [a-z]{1,3} | [0-9]+ ; generated directly, then one character changed.
        var g = GbnfGrammar.Parse("root ::= item (\",\" item)*\nitem ::= [a-z]{1,3} | [0-9]+");
        var regex = new Regex(@"\A(?:([a-z]{1,3}|[0-9]+)(,([a-z]{1,3}|[0-9]+))*)\z");
        var item = Gen.OneOf(Gen.Char['a', 'z'].Array[1, 3].Select(c => new string(c)), Gen.Char['0', '9'].Array[1, 6].Select(c => new string(c)));
        var sentence = item.Array[1, 6].Select(items => string.Join(",", items));
        sentence.Select(Gen.Int[0, 1000], Gen.Char[',', 'z']).Sample((s, at, c) =>
        {
            Assert.True(g.Matches(s), s);
            var m = new GrammarMatcher(g);
            Assert.All(s, ch => Assert.True(m.TryAccept(ch.ToString()), s)); // character by character too
            Assert.True(m.IsComplete);
            var chars = s.ToCharArray();
            chars[at % chars.Length] = c;
            string mutated = new(chars);
            Assert.True(regex.IsMatch(mutated) == g.Matches(mutated), $"'{mutated}'");
        }, iter: 2000);
    }
}
