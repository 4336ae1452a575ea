using System.Globalization;
using System.Text.Json;
using CsCheck;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>The JSON Schema to GBNF converter: emitted text, refusals with their JSON Pointers, determinism, and (through a test-only regex reading of the grammar) what the rules accept.</summary>
public class JsonSchemaGrammarTests
{
    private const string Space = """
        space ::= ( " " | "\n"{1,2} [ \t]{0,20} )?

        """;

    private const string Char = """
        char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )

        """;

    [Fact]
    public void StringSchemaIsTheStringRule()
    {
        Assert.Equal(
            Char + "root ::= string\n" + Space + "string ::= \"\\\"\" char* \"\\\"\" space\n",
            JsonSchemaGrammar.FromSchema("""{"type": "string"}"""));
    }

    [Fact]
    public void BooleanSchema()
    {
        Assert.Equal(
            "boolean ::= ( \"true\" | \"false\" ) space\nroot ::= boolean\n" + Space,
            JsonSchemaGrammar.FromSchema("""{"type": "boolean", "description": "a flag"}"""));
    }

    [Fact]
    public void ObjectWithRequiredAndOptionalProperties()
    {
        string g = JsonSchemaGrammar.FromSchema("""
            {"type": "object",
             "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}},
             "required": ["b"]}
            """);
        Assert.Equal("""
            boolean ::= ( "true" | "false" ) space
            integer ::= "-"? integral-part space
            integral-part ::= "0" | [1-9] [0-9]{0,15}
            null ::= "null" space
            root ::= "{" space root-b-kv ( "," space root-a-kv )? ( "," space root-c-kv )? "}" space
            root-a-kv ::= "\"a\"" space ":" space integer
            root-b-kv ::= "\"b\"" space ":" space boolean
            root-c-kv ::= "\"c\"" space ":" space null
            space ::= ( " " | "\n"{1,2} [ \t]{0,20} )?

            """, g);
    }

    [Fact]
    public void AllOptionalPropertiesStartAnywhereInOrder()
    {
        string g = JsonSchemaGrammar.FromSchema("""{"properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}}""");
        Assert.Contains("root ::= \"{\" space ( root-a-kv ( \",\" space root-b-kv )? | root-b-kv )? \"}\" space\n", g);
    }

    [Fact]
    public void ArrayBoundsAndIntegerRange()
    {
        string g = JsonSchemaGrammar.FromSchema("""{"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 12}, "minItems": 1, "maxItems": 3}""");
        Assert.Equal("""
            root ::= "[" space root-item ( "," space root-item ){0,2} "]" space
            root-item ::= ( [0-9] | "1" [0-2] | "-" [1-5] ) space
            space ::= ( " " | "\n"{1,2} [ \t]{0,20} )?

            """, g);
    }

    [Fact]
    public void EnumIsAnAlternationOfExactValues()
    {
        string g = JsonSchemaGrammar.FromSchema("""{"enum": ["red", 1, null, [true]]}""");
        Assert.Equal(
            "root ::= \"\\\"red\\\"\" space | \"1\" space | \"null\" space | \"[\" space \"true\" space \"]\" space\n" + Space,
            g);
    }

    [Fact]
    public void RecursiveReferenceIsARuleNamedAfterTheDefinition()
    {
        string g = JsonSchemaGrammar.FromSchema("""
            {"$defs": {"Node": {"type": "object",
                                "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                                "required": ["v", "next"]}},
             "$ref": "#/$defs/Node"}
            """);
        Assert.Contains("Node ::= \"{\" space Node-v-kv \",\" space Node-next-kv \"}\" space\n", g);
        Assert.Contains("Node-next ::= Node | null\n", g);
        Assert.Contains("root ::= Node\n", g);
    }

    [Fact]
    public void JsonModeGrammars()
    {
        Assert.StartsWith("array ::= ", JsonSchemaGrammar.JsonObject);
        Assert.Contains("root ::= object\n", JsonSchemaGrammar.JsonObject);
        Assert.Contains("root ::= value\n", JsonSchemaGrammar.JsonValue);
        Assert.Equal(JsonSchemaGrammar.JsonObject, JsonSchemaGrammar.FromSchema("""{"type": "object"}"""));
        Assert.Equal(JsonSchemaGrammar.JsonValue, JsonSchemaGrammar.FromSchema("{}"));
        Assert.Equal(JsonSchemaGrammar.JsonValue, JsonSchemaGrammar.FromSchema("true"));
    }

    [Fact]
    public void SameSchemaSameText()
    {
        const string schema = """
            {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "tags": {"type": "array", "items": {"enum": ["x", "y"]}},
             "when": {"type": "string", "format": "date-time"}, "n": {"type": "integer", "minimum": 3}, "code": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
             "extra": {"additionalProperties": {"type": "number"}, "properties": {"k": {"const": 1}}}},
             "required": ["when", "id"]}
            """;
        string first = JsonSchemaGrammar.FromSchema(schema);
        using var doc = JsonDocument.Parse(schema);
        Assert.Equal(first, JsonSchemaGrammar.FromSchema(doc.RootElement));
        Assert.Equal(first, JsonSchemaGrammar.FromSchema(schema));
    }

    [Theory]
    [InlineData("""{"properties": {"age": {"type": "integer", "multipleOf": 3}}}""", """/properties/age/multipleOf: "multipleOf" is not supported""")]
    [InlineData("""{"type": "string", "format": "email"}""", """/format: format "email" is not supported (supported: date, time, date-time, uuid)""")]
    [InlineData("""{"$ref": "https://example.com/s.json"}""", """/$ref: "$ref": "https://example.com/s.json" is not supported (only references inside the document, "#/...")""")]
    [InlineData("""{"items": {"$ref": "#/$defs/Missing"}}""", """/items/$ref: "$ref": "#/$defs/Missing" points to nothing in the document""")]
    [InlineData("""{"type": "integer", "minLength": 2}""", "/minLength: \"minLength\" does not apply to type \"integer\"")]
    [InlineData("""{"type": "number", "minimum": 0}""", "/minimum: \"minimum\" is only supported with \"type\": \"integer\", not \"number\"")]
    [InlineData("""{"type": "array", "uniqueItems": true}""", """/uniqueItems: "uniqueItems": true is not supported""")]
    [InlineData("""{"properties": {"a/b": {"not": {}}}}""", """/properties/a~1b/not: "not" is not supported""")]
    [InlineData("""{"type": "string", "pattern": "^(?=a)b$"}""", """/pattern: pattern "^(?=a)b$": "(?" groups other than "(?:" (lookaround, named groups) are not supported (offset 1)""")]
    [InlineData("""{"type": "string", "pattern": "\\bword"}""", """/pattern: pattern "\\bword": escape "\b" is not supported (offset 0)""")]
    [InlineData("""{"type": "string", "minLength": 3, "maxLength": 2}""", "/maxLength: \"maxLength\" is below \"minLength\"")]
    [InlineData("""{"type": "string", "minLength": -1}""", """/minLength: "minLength" must be a non-negative integer""")]
    [InlineData("""{"type": "integer", "minimum": 5, "maximum": 4}""", """(root): no integer lies between the minimum and the maximum""")]
    [InlineData("""{"type": "text"}""", "/type: unknown type \"text\"")]
    [InlineData("""{"anyOf": [{"type": "string"}], "minLength": 1}""", """/minLength: "minLength" next to "anyOf" is not supported""")]
    [InlineData("""{"allOf": [{"type": "string"}, {"maxLength": 3}]}""", """/allOf/0/type: "type" is not supported with "allOf" (allOf merges object schemas: type, properties, required)""")]
    [InlineData("""{"$defs": {"d": {"type": "string", "format": "email"}}, "properties": {"x": {"$ref": "#/$defs/d"}}}""", """/$defs/d/format: format "email" is not supported (supported: date, time, date-time, uuid)""")]
    [InlineData("""{"properties": {"a": {"type": "string"}}, "required": ["a", "b"], "additionalProperties": false}""", """/required: required property "b" is not allowed by "additionalProperties": false""")]
    [InlineData("""{"prefixItems": [{"type": "string"}], "minItems": 2}""", """/minItems: "minItems" is 2 but no more than 1 items are allowed""")]
    [InlineData("""false""", """(root): the schema false accepts no value""")]
    [InlineData("""[1]""", """(root): a schema must be an object or a boolean, not an array""")]
    [InlineData("""{"enum": []}""", """/enum: "enum" must be a non-empty array""")]
    [InlineData("""{"type": "string", "enum": [1, 2]}""", "/enum: no value of \"enum\" has type \"string\"")]
    [InlineData("""{"if": {}, "then": {}}""", """/if: "if" is not supported""")]
    public void UnsupportedIsRefusedWithItsPath(string schema, string message)
    {
        var e = Assert.Throws<JsonSchemaException>(() => JsonSchemaGrammar.FromSchema(schema));
        Assert.Equal(message, e.Message);
        Assert.IsAssignableFrom<FormatException>(e);
    }

    [Theory]
    [InlineData("""{"anyOf": [{"$ref": "#"}, {"type": "string"}]}""")]
    [InlineData("""{"$defs": {"a": {"oneOf": [{"$ref": "#/$defs/a"}, {"const": 1}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}}""")]
    public void A_ref_back_to_itself_before_any_character_is_a_schema_error(string schema)
    {
        // Was a GBNF message about writing repetitions with * (found by GrammarFuzzTests); a reference inside an array
        // or object stays fine: {"type": "array", "items": {"$ref": "#"}}.
        var e = Assert.Throws<JsonSchemaException>(() => JsonSchemaGrammar.FromSchema(schema));
        Assert.StartsWith("(root): a $ref leads back to the schema it is in before any character is written (left recursion)", e.Message, StringComparison.Ordinal);
        _ = GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema("""{"type": "array", "items": {"$ref": "#"}}"""));
    }

    [Fact]
    public void NotJsonIsRefused()
    {
        var e = Assert.Throws<JsonSchemaException>(() => JsonSchemaGrammar.FromSchema("{type: string}"));
        Assert.StartsWith("(root): the schema is not valid JSON: ", e.Message);
        Assert.Equal("", e.Path);
    }

    [Fact]
    public void AnnotationsAreAccepted()
    {
        string plain = JsonSchemaGrammar.FromSchema("""{"type": "string"}""");
        Assert.Equal(plain, JsonSchemaGrammar.FromSchema("""
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:x", "title": "T", "description": "D",
             "examples": ["a"], "default": "b", "$comment": "c", "deprecated": false, "readOnly": true, "type": "string", "$defs": {"unused": {"not": {}}}}
            """));
    }

    // What the rules accept, read as a regular expression (non-recursive schemas).
    private static bool Accepts(string schema, string doc) => JsonSchemaGbnfRegex.Compile(JsonSchemaGrammar.FromSchema(schema)).IsMatch(doc);

    [Theory]
    [InlineData("""{"type": "string", "minLength": 2, "maxLength": 3}""", "\"ab\"", true)]
    [InlineData("""{"type": "string", "minLength": 2, "maxLength": 3}""", "\"a\\\"c\"", true)]
    [InlineData("""{"type": "string", "minLength": 2, "maxLength": 3}""", "\"a\"", false)]
    [InlineData("""{"type": "string", "minLength": 2, "maxLength": 3}""", "\"abcd\"", false)]
    [InlineData("""{"type": "string", "format": "date"}""", "\"2024-02-29\"", true)]
    [InlineData("""{"type": "string", "format": "date"}""", "\"2024-13-01\"", false)]
    [InlineData("""{"type": "string", "format": "date-time"}""", "\"2024-02-29T23:59:01.5+01:00\"", true)]
    [InlineData("""{"type": "string", "format": "time"}""", "\"24:00:00Z\"", false)]
    [InlineData("""{"type": "string", "format": "uuid"}""", "\"123e4567-e89b-12d3-a456-426614174000\"", true)]
    [InlineData("""{"type": "string", "format": "uuid"}""", "\"123e4567e89b12d3a456426614174000\"", false)]
    [InlineData("""{"type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)*$"}""", "\"kv-ada-2\"", true)]
    [InlineData("""{"type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)*$"}""", "\"kv--ada\"", false)]
    [InlineData("""{"type": "string", "pattern": "^\\d{3}\\.x?$"}""", "\"123.\"", true)]
    [InlineData("""{"type": "string", "pattern": "^\\d{3}\\.x?$"}""", "\"12.x\"", false)]
    [InlineData("""{"type": "string", "pattern": "a\"b"}""", "\"xa\\\"by\"", true)]
    [InlineData("""{"type": "string", "pattern": "^[^0-9]$"}""", "\"\\\"\"", false)]
    [InlineData("""{"type": "string", "pattern": "^[\\s\"]{2}$"}""", "\" \\\"\"", true)]
    [InlineData("""{"type": "string", "pattern": "^(?:ab|cd)+$"}""", "\"abcdab\"", true)]
    [InlineData("""{"type": "string", "pattern": "^(?:ab|cd)+$"}""", "\"abc\"", false)]
    [InlineData("""{"type": ["integer", "null"]}""", "null", true)]
    [InlineData("""{"type": ["integer", "null"]}""", "-0", true)]
    [InlineData("""{"type": ["integer", "null"]}""", "01", false)]
    [InlineData("""{"type": "number"}""", "-1.5e+10", true)]
    [InlineData("""{"type": "number"}""", "1.", false)]
    [InlineData("""{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}""", "9", true)]
    [InlineData("""{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}""", "10", false)]
    [InlineData("""{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}""", "0", false)]
    [InlineData("""{"const": {"a": [1, "x"]}}""", "{ \"a\": [1, \"x\"] }", true)]
    [InlineData("""{"const": {"a": [1, "x"]}}""", "{\"a\":[1,\"y\"]}", false)]
    public void RulesAcceptWhatTheSchemaAllows(string schema, string doc, bool accepted)
    {
        Assert.Equal(accepted, Accepts(schema, doc));
    }

    private const string Person = """
        {"type": "object",
         "properties": {"name": {"type": "string", "minLength": 1},
                        "age": {"type": "integer", "minimum": 0, "maximum": 150},
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                        "born": {"type": "string", "format": "date"}},
         "required": ["name", "age"]}
        """;

    [Theory]
    [InlineData("""{"name":"Ada","age":36}""", true)]
    [InlineData("{\n  \"name\": \"Ada\",\n  \"age\": 36,\n  \"tags\": [\"x\", \"y\"],\n  \"born\": \"1815-12-10\"\n}", true)]
    [InlineData("""{ "name" : "Ada" , "age" : 0 , "born" : "1815-12-10" }""", true)]
    [InlineData("""{"name":"Ada"}""", false)]
    [InlineData("""{"name":"Ada","age":"36"}""", false)]
    [InlineData("""{"name":"Ada","age":151}""", false)]
    [InlineData("""{"name":"","age":1}""", false)]
    [InlineData("""{"name":"Ada","age":1,"tags":["a","b","c"]}""", false)]
    [InlineData("""{"name":"Ada","age":1,"born":"1815-12-32"}""", false)]
    [InlineData("""{"name":"Ada","age":1,"nick":"A"}""", false)]
    [InlineData("""{"age":1,"name":"Ada"}""", false)]
    public void ObjectRulesAcceptValidDocumentsOnly(string doc, bool accepted)
    {
        Assert.Equal(accepted, Accepts(Person, doc));
    }

    [Theory]
    [InlineData("""{"a":1,"x":2.5,"y":3}""", true)]
    [InlineData("""{"x":2.5}""", true)]
    [InlineData("""{}""", true)]
    [InlineData("""{"a":1,"a":2}""", false)]
    [InlineData("""{"x":2.5,"a":1}""", false)]
    [InlineData("""{"ab":"s"}""", false)]
    [InlineData("""{"ab":4}""", true)]
    [InlineData("""{"x":"s"}""", false)]
    public void AdditionalPropertiesSchemaCoversOtherKeysOnly(string doc, bool accepted)
    {
        Assert.Equal(accepted, Accepts("""{"properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "number"}}""", doc));
    }

    [Fact]
    public void IntegerRangesMatchExactlyTheirIntegers()
    {
        Gen.Select(Gen.Long[-3000, 3000], Gen.Long[-3000, 3000], Gen.Bool, Gen.Bool).Sample((a, b, openLow, openHigh) =>
        {
            long lo = Math.Min(a, b);
            long hi = Math.Max(a, b);
            string schema = "{\"type\": \"integer\"" + (openLow ? "" : $", \"minimum\": {lo}") + (openHigh ? "" : $", \"maximum\": {hi}") + "}";
            var regex = JsonSchemaGbnfRegex.Compile(JsonSchemaGrammar.FromSchema(schema));
            for (long n = lo - 30; n <= hi + 30; n += 1 + ((hi - lo) / 200))
            {
                bool want = (openLow || n >= lo) && (openHigh || n <= hi);
                Assert.True(want == regex.IsMatch(n.ToString(CultureInfo.InvariantCulture)), $"{schema}: {n}");
            }

            foreach (long n in new[] { lo, hi, lo - 1, hi + 1 })
            {
                bool want = (openLow || n >= lo) && (openHigh || n <= hi);
                Assert.True(want == regex.IsMatch(n.ToString(CultureInfo.InvariantCulture)), $"{schema}: {n}");
            }
        });
    }

    [Fact]
    public void LargeIntegerBounds()
    {
        Assert.True(Accepts("""{"type": "integer", "minimum": 1000000000000}""", "9999999999999999"));
        Assert.False(Accepts("""{"type": "integer", "minimum": 1000000000000}""", "999999999999"));
        Assert.True(Accepts("""{"type": "integer", "maximum": -7}""", "-1234567890123456"));
        Assert.False(Accepts("""{"type": "integer", "maximum": -7}""", "-6"));
        Assert.Throws<JsonSchemaException>(() => JsonSchemaGrammar.FromSchema("""{"type": "integer", "minimum": 1e20}"""));
    }
}
