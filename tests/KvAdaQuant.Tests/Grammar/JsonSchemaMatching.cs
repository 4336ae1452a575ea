using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>Whole-string acceptance of a converted grammar, for the acceptance tests: the GBNF parser's, checked against the test-only regex reading of the rules.</summary>
internal static class JsonSchemaMatching
{
    public static Func<string, bool> Matcher(string grammar)
    {
        var parsed = GbnfGrammar.Parse(grammar);
        var regex = JsonSchemaGbnfRegex.Compile(grammar);
        return text =>
        {
            bool accepted = parsed.Matches(text);
            Assert.True(accepted == regex.IsMatch(text), $"the GBNF matcher and the regex reading disagree on {text}");
            return accepted;
        };
    }
}
