namespace KvAdaQuant.Tests.Grammar;

/// <summary>Whole-string acceptance of a converted grammar, for the acceptance tests.</summary>
internal static class JsonSchemaMatching
{
    public static Func<string, bool> Matcher(string grammar)
    {
        var regex = JsonSchemaGbnfRegex.Compile(grammar);
        return regex.IsMatch;
    }
}
