using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// The GBNF parser: each piece of llama.cpp's syntax means what llama.cpp's grammars/README.md says, and each error names
/// what is wrong, the line and column, and the rule.
/// </summary>
public class GbnfParserTests
{
    [Theory]
    [InlineData("root ::= \"abc\"", "abc", "ab")]
    [InlineData("root ::= \"a\" | \"b\" | \"c\"", "b", "ab")]
    [InlineData("root ::= \"a\" (\"b\" | \"c\") \"d\"", "acd", "ad")]
    [InlineData("root ::= x y\ny ::= \"2\"\nx ::= \"1\"", "12", "21")] // forward references, any order
    [InlineData("root ::= [a-c]", "b", "d")]
    [InlineData("root ::= [abc0-9]", "7", "x")]
    [InlineData("root ::= [^a-c]", "d", "a")]
    [InlineData("root ::= .", "é", "")]
    [InlineData("root ::= \"a\"*", "aaaa", "b")]
    [InlineData("root ::= \"a\"+", "a", "")]
    [InlineData("root ::= \"a\"?", "", "aa")]
    [InlineData("root ::= \"ab\"*", "abab", "aba")] // repetition repeats the whole literal
    [InlineData("root ::= \"a\"{3}", "aaa", "aaaa")]
    [InlineData("root ::= \"a\"{2,}", "aaaaa", "a")]
    [InlineData("root ::= \"a\"{1,2}", "aa", "aaa")]
    [InlineData("root ::= \"a\" { 0 , 1 }", "", "aa")]
    [InlineData("root ::= \"\\n\\r\\t\\\\\\\"\\[\\]\\-\"", "\n\r\t\\\"[]-", "")]
    [InlineData("root ::= \"\\x41\\u00e9\\U0001F600\"", "Aé😀", "A")]
    [InlineData("root ::= [\\x30-\\x39\\-]+", "1-2", "a")]
    [InlineData("# a comment\nroot ::= \"a\" # another\n  # and one more\n", "a", "")]
    [InlineData("root ::= (\n  \"a\"\n  \"b\"\n)", "ab", "a")] // newlines inside parentheses
    [InlineData("root ::= \"a\" |\n  \"b\" |\n  \"c\"", "c", "")] // newlines after |
    [InlineData("root ::=\n  \"a\"", "a", "")]
    [InlineData("root ::= \"\"", "", "a")]
    [InlineData("root ::= \"a\" |", "", "b")] // an empty alternative
    [InlineData("root ::= \"x\"\r\nr2 ::= \"y\"\r\n", "x", "y")]
    [InlineData("root ::= [😀-😂]", "😁", "😃")]
    [InlineData("root ::= my-rule2\nmy-rule2 ::= \"z\"", "z", "")]
    public void Each_piece_of_the_syntax_matches_what_it_should(string grammar, string yes, string no)
    {
        var g = GbnfGrammar.Parse(grammar);
        Assert.True(g.Matches(yes), $"should match '{yes}'");
        Assert.False(g.Matches(no), $"should not match '{no}'");
    }

    [Fact]
    public void Another_root_can_be_chosen()
    {
        var g = GbnfGrammar.Parse("root ::= \"a\"\nother ::= \"b\"", root: "other");
        Assert.Equal("other", g.Root);
        Assert.True(g.Matches("b"));
        Assert.False(g.Matches("a"));
    }

    [Theory]
    [InlineData("", "the grammar is empty")]
    [InlineData("  # only a comment\n\n", "the grammar is empty")]
    [InlineData("start ::= \"a\"", "missing root rule: the grammar defines no rule 'root'")]
    [InlineData("root ::= \"a\" value", "line 1, column 14: undefined rule 'value' (referenced in rule 'root')")]
    [InlineData("root ::= a\na ::= \"x\"\n\na ::= \"y\"", "line 4, column 1: rule 'a' is defined twice (first at line 2, column 1)")]
    [InlineData("root ::= \"a\"\nitem ::= \"abc", "line 2, column 10: unterminated string literal in rule 'item'")]
    [InlineData("root ::= [a-z", "line 1, column 10: unterminated character class in rule 'root'")]
    [InlineData("root ::= (\"a\" | \"b\"", "line 1, column 10: unclosed '(' in rule 'root'")]
    [InlineData("root ::= \"a\")", "line 1, column 13: ')' without a matching '(' in rule 'root'")]
    [InlineData("root ::=\n  \"a\\q\"", "line 2, column 5: bad escape '\\q' in rule 'root'")]
    [InlineData("root ::= \"\\x4\"", "line 1, column 11: bad escape '\\x' in rule 'root': expected 2 hex digits")]
    [InlineData("root ::= \"\\U00110000\"", "beyond the last code point U+10FFFF")]
    [InlineData("root ::= \"a\"{3,2}", "line 1, column 13: bad repetition bounds {3,2} in rule 'root': the maximum is below the minimum")]
    [InlineData("root ::= \"a\"{2001}", "bad repetition bounds in rule 'root': at most 2000 repetitions")]
    [InlineData("root ::= \"a\"{,2}", "line 1, column 14: bad repetition in rule 'root': expected a number")]
    [InlineData("root ::= \"a\"{2", "bad repetition in rule 'root': expected '}'")]
    [InlineData("root ::= * \"a\"", "line 1, column 10: '*' has no item before it to repeat in rule 'root'")]
    [InlineData("root ::= [z-a]", "line 1, column 11: bad range z-a in a character class of rule 'root'")]
    [InlineData("root = \"a\"", "line 1, column 6: expected '::=' after the rule name 'root', found '='")]
    [InlineData("root ::= \"a\"\n::= \"b\"", "line 2, column 1: expected a rule name")]
    [InlineData("root ::= <[12]>", "line 1, column 10: unexpected '<' in rule 'root'")]
    public void Errors_name_what_where_and_the_rule(string grammar, string message)
    {
        var e = Assert.Throws<GrammarException>(() => GbnfGrammar.Parse(grammar));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.IsAssignableFrom<FormatException>(e);
    }

    [Theory]
    [InlineData("root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]", "line 2, column 1: rule 'expr' is left-recursive", "expr")]
    [InlineData("root ::= a\na ::= b \"x\"\nb ::= \"y\"? a", "rule 'a' is left-recursive (through a -> b -> a)", "a")]
    [InlineData("root ::= (\"\" | \"z\") root \"x\" | \"y\"", "line 1, column 1: rule 'root' is left-recursive", "root")]
    public void Left_recursion_is_refused_naming_the_rule(string grammar, string message, string rule)
    {
        var e = Assert.Throws<GrammarException>(() => GbnfGrammar.Parse(grammar));
        Assert.Contains(message, e.Message);
        Assert.Equal(rule, e.Rule);
    }

    [Fact]
    public void Right_recursion_and_nesting_are_fine()
    {
        var g = GbnfGrammar.Parse("root ::= \"(\" root \")\" | \"x\"");
        Assert.True(g.Matches("((x))"));
        Assert.False(g.Matches("((x)"));
        var e = Assert.Throws<GrammarException>(() => GbnfGrammar.Parse("root ::= \"a\" value"));
        Assert.Equal((1, 14, "root"), (e.Line, e.Column, e.Rule));
    }
}
