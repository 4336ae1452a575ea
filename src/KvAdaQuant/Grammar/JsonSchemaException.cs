namespace KvAdaQuant.Grammar;

/// <summary>
/// A JSON Schema that <see cref="JsonSchemaGrammar"/> cannot turn into a grammar: the message starts with the JSON Pointer
/// of the place at fault (the keyword where there is one), as in <c>/properties/age/multipleOf: "multipleOf" is not supported</c>.
/// </summary>
public sealed class JsonSchemaException : FormatException
{
    public JsonSchemaException(string path, string problem)
        : base($"{(path.Length == 0 ? "(root)" : path)}: {problem}")
    {
        Path = path;
        Problem = problem;
    }

    /// <summary>The JSON Pointer of the place at fault in the schema document ("" for the whole document).</summary>
    public string Path { get; }

    /// <summary>The problem, without the path.</summary>
    public string Problem { get; }
}
