using System.Text.Json;

namespace KvAdaQuant.Grammar;

/// <summary>
/// JSON Schema to GBNF, after llama.cpp's <c>json-schema-to-grammar</c>: <see cref="FromSchema(JsonElement)"/> gives a grammar
/// (with a <c>root</c> rule) whose sentences are JSON documents valid under the schema, spelled with at most a little whitespace
/// between tokens (the <c>space</c> rule: nothing, one space, or one or two newlines and up to 20 spaces or tabs; no whitespace
/// before the document). <see cref="JsonValue"/> and <see cref="JsonObject"/> are the grammars of JSON mode.
/// </summary>
/// <remarks>
/// Supported: <c>type</c> (one or a list), <c>enum</c>, <c>const</c>, <c>properties</c>, <c>required</c>, <c>additionalProperties</c>,
/// <c>items</c>, <c>prefixItems</c>, <c>minItems</c>, <c>maxItems</c>, <c>minLength</c>, <c>maxLength</c>, <c>pattern</c> (a regex subset),
/// <c>format</c> (date, time, date-time, uuid), <c>minimum</c> / <c>maximum</c> / <c>exclusiveMinimum</c> / <c>exclusiveMaximum</c> on integers,
/// <c>anyOf</c> and <c>oneOf</c> (both as alternation), <c>allOf</c> of object schemas (merged), local <c>$ref</c> (recursion included),
/// and <c>{}</c> / <c>true</c> for any value. Annotations (<c>title</c>, <c>description</c>, <c>$schema</c>, <c>$id</c>, <c>examples</c>,
/// <c>default</c>, ...) are accepted. Anything else throws <see cref="JsonSchemaException"/> naming the keyword's JSON Pointer.
/// As in llama.cpp, an object schema with <c>properties</c> and no <c>additionalProperties</c> is closed (no other keys), required
/// properties come first in schema order and optional ones follow in schema order, and a <c>prefixItems</c> tuple without
/// <c>items</c> has exactly its listed items: the grammar accepts a subset of what the schema allows, never more.
/// </remarks>
public static class JsonSchemaGrammar
{
    /// <summary>Any JSON value (JSON mode without an object requirement).</summary>
    public static string JsonValue { get; } = JsonSchemaConverter.PrimitiveGrammar("value");

    /// <summary>Any JSON object: OpenAI's <c>response_format: {"type": "json_object"}</c>.</summary>
    public static string JsonObject { get; } = JsonSchemaConverter.PrimitiveGrammar("object");

    /// <summary>The grammar for the schema in <paramref name="schemaJson"/> (JSON text).</summary>
    /// <exception cref="JsonSchemaException">The text is not JSON, or the schema uses something unsupported.</exception>
    public static string FromSchema(string schemaJson)
    {
        ArgumentNullException.ThrowIfNull(schemaJson);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(schemaJson);
        }
        catch (JsonException e)
        {
            throw new JsonSchemaException("", $"the schema is not valid JSON: {e.Message}");
        }

        using (doc)
        {
            return FromSchema(doc.RootElement);
        }
    }

    /// <summary>The grammar for <paramref name="schema"/>.</summary>
    /// <exception cref="JsonSchemaException">The schema uses something unsupported.</exception>
    public static string FromSchema(JsonElement schema)
    {
        string grammar = new JsonSchemaConverter(schema).Convert();
        try
        {
            _ = GbnfGrammar.Parse(grammar);
        }
        catch (GrammarException e) when (e.Message.Contains("left-recursive", StringComparison.Ordinal))
        {
            // A $ref back to a schema being written before any character of it (e.g. {"anyOf": [{"$ref": "#"}, ...]}).
            throw new JsonSchemaException(string.Empty, $"a $ref leads back to the schema it is in before any character is written (left recursion), which a grammar cannot follow; put the reference inside an array or object ({e.Message})");
        }

        return grammar;
    }
}
