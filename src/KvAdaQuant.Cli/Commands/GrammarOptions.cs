using System.CommandLine;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>--grammar TEXT</c> and <c>--grammar-file FILE</c> of <c>generate</c>, <c>chat</c> and <c>serve</c> (llama.cpp's; for
/// <c>serve</c> the constraint of every request that gives none of its own): a GBNF grammar
/// the generated text must follow (<see cref="GbnfGrammar"/>); <c>--json-schema TEXT</c> (<c>-j</c>) and
/// <c>--json-schema-file FILE</c> (llama.cpp's too): a JSON Schema, converted to the grammar of the JSON documents valid
/// under it (<see cref="JsonSchemaGrammar"/>). One of the four at most; a grammar that does not parse is an error naming
/// the option, the line and the column, a schema the converter refuses one naming the option and the keyword's JSON Pointer.
/// </summary>
internal sealed class GrammarOptions
{
    public Option<string?> Grammar { get; } = new("--grammar")
    {
        Description = "constrain the generated text to this GBNF grammar (llama.cpp's syntax; the start rule is 'root'); EOS only once it is complete",
    };

    public Option<string?> GrammarFile { get; } = new("--grammar-file") { Description = "read the GBNF grammar from this UTF-8 file (instead of --grammar)" };

    public Option<string?> JsonSchema { get; } = new("--json-schema", "-j")
    {
        Description = "constrain the generated text to JSON valid under this JSON Schema (converted to a GBNF grammar, as llama.cpp's; e.g. '{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}}, \"required\": [\"name\"]}'), or '{}' for any JSON value",
    };

    public Option<string?> JsonSchemaFile { get; } = new("--json-schema-file") { Description = "read the JSON Schema from this UTF-8 file (instead of --json-schema)" };

    /// <summary>The options, to add to a command.</summary>
    public IEnumerable<Option> All => [Grammar, GrammarFile, JsonSchema, JsonSchemaFile];

    /// <summary>Whether any of the options was given.</summary>
    public bool Given(ParseResult r) => Name(r) is not null;

    /// <summary>The name of the option given (the first of them), or null.</summary>
    public string? Name(ParseResult r) => Options().FirstOrDefault(o => r.GetValue(o) is not null)?.Name;

    private IEnumerable<Option<string?>> Options() => [Grammar, GrammarFile, JsonSchema, JsonSchemaFile];

    /// <summary>The grammar the options give, or null; an error names the option and, for a bad grammar, the line and column, for a bad schema the keyword's path.</summary>
    public GbnfGrammar? Parse(ParseResult r) => ParseWithText(r)?.Grammar;

    /// <summary>As <see cref="Parse"/>, with the GBNF text (a schema's converted grammar) beside the parsed grammar.</summary>
    public (string Text, GbnfGrammar Grammar)? ParseWithText(ParseResult r)
    {
        var given = Options().Where(o => r.GetValue(o) is not null).Select(o => o.Name).ToList();
        if (given.Count > 1)
        {
            throw new ArgumentException(given.Count == 2 && given[0] == "--grammar" && given[1] == "--grammar-file"
                ? "--grammar and --grammar-file: give the grammar one way, not both"
                : $"{string.Join(" and ", given)}: give one of --grammar, --grammar-file, --json-schema, --json-schema-file");
        }

        if (given.Count == 0)
        {
            return null;
        }

        bool schema = given[0] is "--json-schema" or "--json-schema-file";
        string option = given[0];
        string text;
        if (given[0] is "--grammar-file" or "--json-schema-file")
        {
            string path = r.GetValue(given[0] == "--grammar-file" ? GrammarFile : JsonSchemaFile)!;
            if (!File.Exists(path))
            {
                throw new ArgumentException(Directory.Exists(path)
                    ? $"{option} {path}: is a folder; give the {(schema ? "JSON Schema" : "grammar's GBNF")} file"
                    : $"{option} {path}: no such file");
            }

            text = File.ReadAllText(path);
            option = $"{option} {path}";
        }
        else
        {
            text = r.GetValue(given[0] == "--grammar" ? Grammar : JsonSchema)!;
        }

        if (schema)
        {
            try
            {
                text = JsonSchemaGrammar.FromSchema(text);
            }
            catch (JsonSchemaException e)
            {
                throw new ArgumentException($"{option}: {e.Message}", e);
            }
        }

        try
        {
            return (text, GbnfGrammar.Parse(text));
        }
        catch (GrammarException e)
        {
            throw new ArgumentException($"{option}: {e.Message}", e);
        }
    }
}
