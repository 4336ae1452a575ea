using System.Text.Json.Nodes;
using CsCheck;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// Random malformed input for the two grammar front ends (CsCheck): GBNF text cut, spliced and salted with the syntax's
/// own characters must parse (and then match text without error) or fail with <see cref="GrammarException"/>; JSON
/// schemas with any value replaced anywhere must give a grammar that parses, or fail with
/// <see cref="JsonSchemaException"/> or <see cref="ArgumentException"/> (which serve and the CLI show as the user's
/// error), never anything else.
/// </summary>
public class GrammarFuzzTests
{
    private static readonly string[] Grammars =
    [
        "root ::= \"a\" | [b-d]+ x\nx ::= (\"y\" | [^z]){1,3} .",
        "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"",
        "root ::= \"\\\"\" ([^\"\\\\] | \"\\\\\" [\"\\\\nt\\x41\\u00e9\\U0001F600])* \"\\\"\" # comment\n",
        JsonSchemaGrammar.FromSchema("""{"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]{2,4}$"}, "b": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 300}}}, "required": ["a"]}"""),
    ];

    private static readonly string[] Salt = ["(", ")", "[", "]", "{", "}", "{0,}", "{3,1}", "{99999999999}", "*", "+", "?", "|", "::=", "\"", "\\", "\\x", "\\u12", "\\U0011FFFF", "^", "-", ".", "#", "\n", " ", "root", "x", "[z-a]", "[\\", "\"\\", "((((((((((", "a{1,2}{3}"];

    [Fact]
    public void Mangled_gbnf_parses_or_is_a_grammar_error()
    {
        var gen = Gen.Select(Gen.Int[0, Grammars.Length - 1], Gen.Select(Gen.Int[0, 2], Gen.Int[0, 10_000], Gen.Int[0, Salt.Length - 1]).Array[1, 4]);
        gen.Sample((g, edits) =>
        {
            string text = Grammars[g];
            foreach (var (kind, at, salt) in edits)
            {
                int i = at % (text.Length + 1);
                text = kind switch
                {
                    0 => text[..i] + Salt[salt] + text[i..],
                    1 => text.Remove(i, Math.Min(1 + (salt % 4), text.Length - i)),
                    _ => text[..i],
                };
            }

            GbnfGrammar parsed;
            try
            {
                parsed = GbnfGrammar.Parse(text);
            }
            catch (GrammarException)
            {
                return;
            }

            // A grammar that parsed matches text without throwing (too ambiguous is its own GrammarException).
            try
            {
                var m = new GrammarMatcher(parsed);
                foreach (string s in (string[])["a", "12+(3)", "\"x\\n\"", "{\"a\": \"ab\"}", "bcd y z"])
                {
                    _ = m.CanAccept(System.Text.Encoding.UTF8.GetBytes(s));
                }
            }
            catch (GrammarException)
            {
            }
        }, iter: 1000, threads: 1, print: t => $"{t.Item1}: {string.Join(", ", t.Item2)}");
    }

    private static readonly string[] Schemas =
    [
        """{"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 130}, "tags": {"type": "array", "items": {"enum": ["a", 1, null]}, "minItems": 1, "maxItems": 3, "uniqueItems": true}}, "required": ["name"], "additionalProperties": false}""",
        """{"$defs": {"n": {"anyOf": [{"type": "number"}, {"type": "null"}]}}, "type": "array", "prefixItems": [{"$ref": "#/$defs/n"}, {"const": "x"}], "items": {"type": "boolean"}}""",
        """{"oneOf": [{"type": "string", "format": "date"}, {"type": "string", "pattern": "^(ab|c+)[0-9]{2}$"}, {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]}]}""",
    ];

    private static readonly string[] Values =
    [
        "0", "-1", "1", "3.5", "1e308", "-1e308", "9223372036854775807", "true", "false", "null", "\"\"", "\"string\"", "\"integer\"",
        "\"object\"", "\"array\"", "\"#/$defs/n\"", "\"#/nowhere\"", "\"^(\"", "\"[z-a]\"", "\"a{2,1}\"", "\"date-time\"", "[]", "[1, 2]",
        "[\"string\", \"null\"]", "{}", "{\"type\": \"string\"}", "{\"$ref\": \"#\"}", "{\"not\": {}}", "{\"minimum\": 5, \"maximum\": 1}",
    ];

    [Fact]
    public void Mangled_json_schemas_give_a_grammar_or_a_schema_error()
    {
        var gen = Gen.Select(Gen.Int[0, Schemas.Length - 1], Gen.Select(Gen.Int[0, 10_000], Gen.Int[0, Values.Length - 1]).Array[1, 3]);
        gen.Sample((i, edits) =>
        {
            var node = JsonNode.Parse(Schemas[i])!;
            foreach (var (at, value) in edits)
            {
                var places = JsonPlaces.Of(node);
                JsonPlaces.Set(places[at % places.Count], JsonNode.Parse(Values[value]));
            }

            string schema = node.ToJsonString();
            string grammar;
            try
            {
                grammar = JsonSchemaGrammar.FromSchema(schema);
            }
            catch (Exception e) when (e is JsonSchemaException or ArgumentException)
            {
                return;
            }

            _ = GbnfGrammar.Parse(grammar); // what the converter writes always parses
        }, iter: 1000, threads: 1, print: t => $"{Schemas[t.Item1]} with {string.Join(", ", t.Item2)}");
    }
}
