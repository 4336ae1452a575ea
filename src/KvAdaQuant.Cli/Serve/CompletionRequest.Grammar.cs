using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Grammar;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Serve;

/// <summary>
/// Output constraints: llama-server's <c>grammar</c> (GBNF text) and <c>json_schema</c> (a JSON Schema), and OpenAI's
/// <c>response_format</c> (<c>{"type": "json_object"}</c>, with llama-server's optional <c>"schema"</c>, and
/// <c>{"type": "json_schema", "json_schema": {"schema": {...}}}</c>), each turned into one GBNF grammar checked here: a bad one
/// is a 400 naming the field and the problem (a schema's with its JSON Pointer). At most one of them may be given.
/// </summary>
internal sealed partial record CompletionRequest
{
    /// <summary>The GBNF grammar the output must follow (from <see cref="GrammarField"/>), or null for free text.</summary>
    public string? Grammar { get; init; }

    /// <summary>The field the grammar came from: <c>grammar</c>, <c>json_schema</c> or <c>response_format</c>; null without one.</summary>
    public string? GrammarField { get; init; }

    /// <summary><see cref="Grammar"/> parsed (once per request; each choice gets its own <see cref="GrammarConstraint"/> over it).</summary>
    public GbnfGrammar? ParsedGrammar { get; init; }

    /// <summary>What wakes <see cref="ParsedGrammar"/> when it is lazy (tool calls with <c>auto</c>: <see cref="ChatToolFormat.AutoTriggers"/>), or null: it constrains from the start.</summary>
    public GrammarTriggers? GrammarTriggers { get; init; }

    /// <summary>The sampler the request asks for, with a fresh grammar state over <paramref name="tokenizer"/> when it has a grammar.</summary>
    public Sampler CreateSampler(ITokenizer tokenizer)
    {
        return CreateSampler(ParsedGrammar is null ? null : new GrammarConstraint(ParsedGrammar, tokenizer, GrammarTriggers), tokenizer);
    }

    /// <summary>The grammar text the request's constraint fields ask for, and the field; (null, null) for none.</summary>
    internal static (string? Grammar, string? Field) ParseConstraint(JsonElement body)
    {
        var found = new List<(string Grammar, string Field)>();
        if (Field(body, "grammar") is { } g && g.ValueKind != JsonValueKind.Null)
        {
            string text = g.ValueKind == JsonValueKind.String ? g.GetString()! : throw Invalid("grammar", $"grammar must be a string of GBNF rules, got {Raw(g)}");
            if (text.Length > 0)
            {
                found.Add((text, "grammar"));
            }
        }

        if (Field(body, "json_schema") is { } js && js.ValueKind != JsonValueKind.Null)
        {
            found.Add((FromSchema(js, "json_schema", "json_schema"), "json_schema"));
        }

        if (Field(body, "response_format") is { } format && ResponseFormat(format) is { } fromFormat)
        {
            found.Add((fromFormat, "response_format"));
        }

        if (found.Count > 1)
        {
            throw Invalid(found[1].Field, $"{found[0].Field} and {found[1].Field} both constrain the output; give one of them");
        }

        return found.Count == 0 ? (null, null) : found[0];
    }

    /// <summary>The grammar text parsed; a 400 naming the field where it does not parse.</summary>
    internal static GbnfGrammar? ParseGrammar(string? text, string? field)
    {
        if (text is null)
        {
            return null;
        }

        try
        {
            return GbnfGrammar.Parse(text);
        }
        catch (GrammarException e)
        {
            throw Invalid(field!, $"{field}: {e.Message}");
        }
    }

    // The grammar for response_format, or null for {"type": "text"}.
    private static string? ResponseFormat(JsonElement format)
    {
        string? type = format.ValueKind == JsonValueKind.Object && Field(format, "type") is { ValueKind: JsonValueKind.String } t ? t.GetString() : null;
        switch (type)
        {
            case "text":
                return null;
            case "json_object":
                return Field(format, "schema") is { ValueKind: not JsonValueKind.Null } schema
                    ? FromSchema(schema, "response_format", "response_format.schema")
                    : JsonSchemaGrammar.JsonObject;
            case "json_schema":
                {
                    if (Field(format, "json_schema") is not { ValueKind: JsonValueKind.Object } wrapper)
                    {
                        throw Invalid("response_format", "response_format.json_schema must be an object holding the schema: {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}");
                    }

                    return Field(wrapper, "schema") is { ValueKind: not JsonValueKind.Null } inner
                        ? FromSchema(inner, "response_format", "response_format.json_schema.schema")
                        : JsonSchemaGrammar.JsonValue;
                }

            default:
                throw Invalid("response_format", $"response_format {Raw(format)} is not supported: its type must be \"text\", \"json_object\" or \"json_schema\"");
        }
    }

    private static string FromSchema(JsonElement schema, string param, string at)
    {
        try
        {
            return JsonSchemaGrammar.FromSchema(schema);
        }
        catch (JsonSchemaException e)
        {
            throw Invalid(param, $"{at}: {e.Message}");
        }
    }
}
