using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// Converted schemas through the GBNF parser: <c>GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(s)).Matches(doc)</c> holds for
/// valid documents (varied whitespace) and not for invalid ones.
/// </summary>
public class JsonSchemaAcceptanceTests
{
    private static bool Matches(string schema, string doc) => GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(schema)).Matches(doc);

    private const string Person = """
        {"type": "object",
         "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 12},
                        "age": {"type": "integer", "minimum": 0, "maximum": 150},
                        "email": {"type": "string", "pattern": "^[a-z.]+@[a-z]+\\.[a-z]{2,3}$"},
                        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
                        "born": {"type": "string", "format": "date"},
                        "id": {"type": "string", "format": "uuid"},
                        "ok": {"type": "boolean"},
                        "note": {"type": ["string", "null"]}},
         "required": ["name", "age"],
         "additionalProperties": false}
        """;

    [Theory]
    [InlineData("""{"name":"Ada","age":36}""")]
    [InlineData("""{ "name" : "Ada Lovelace" , "age" : 36 }""")]
    [InlineData("{\n  \"name\": \"Ada\",\n  \"age\": 0,\n  \"email\": \"ada.l@math.uk\",\n  \"tags\": [\"a\", \"c\"],\n  \"born\": \"1815-12-10\"\n}")]
    [InlineData("{\n\t\"name\": \"A\\\"da\\u00e9\",\n\t\"age\": 150,\n\t\"ok\": false,\n\t\"note\": null\n}")]
    [InlineData("""{"name":"Ada","age":36,"id":"123e4567-e89b-12d3-a456-426614174000","note":"x"}""")]
    [InlineData("""{"name":"Ada","age":36} """)]
    [InlineData("{\"name\":\"Ada\",\"age\":36}\n\n")]
    public void ValidPeopleAreAccepted(string doc)
    {
        Assert.True(Matches(Person, doc), doc);
    }

    [Theory]
    [InlineData("""{"name":"Ada"}""")] // missing required
    [InlineData("""{"age":36}""")] // missing required
    [InlineData("""{"name":"Ada","age":"36"}""")] // wrong type
    [InlineData("""{"name":"Ada","age":36.5}""")] // not an integer
    [InlineData("""{"name":"Ada","age":151}""")] // above the maximum
    [InlineData("""{"name":"Ada","age":-1}""")] // below the minimum
    [InlineData("""{"name":"Ada","age":36,"nick":"A"}""")] // additionalProperties false
    [InlineData("""{"name":"","age":36}""")] // too short
    [InlineData("""{"name":"Ada Lovelace Byron","age":36}""")] // too long
    [InlineData("""{"name":"Ada","age":36,"tags":[]}""")] // too few items
    [InlineData("""{"name":"Ada","age":36,"tags":["a","b","c","a"]}""")] // too many items
    [InlineData("""{"name":"Ada","age":36,"tags":["d"]}""")] // outside the enum
    [InlineData("""{"name":"Ada","age":36,"born":"1815-13-10"}""")] // bad month
    [InlineData("""{"name":"Ada","age":36,"born":"1815-12-32"}""")] // bad day
    [InlineData("""{"name":"Ada","age":36,"email":"ada@math"}""")] // pattern
    [InlineData("""{"name":"Ada","age":36,"id":"123e4567"}""")] // uuid
    [InlineData("""{"name":"Ada","age":36,"ok":"false"}""")] // wrong type
    [InlineData("""{"name":"Ada","age":36""")] // unfinished
    [InlineData(""" {"name":"Ada","age":36}""")] // whitespace before the value
    [InlineData("""{"name":"Ada",   "age":36}""")] // more than the bounded whitespace
    [InlineData("""{"name":"Ada","age":036}""")] // leading zero
    [InlineData("""{"name":"Ada","age":36,"age":36}""")] // twice
    public void InvalidPeopleAreRefused(string doc)
    {
        Assert.False(Matches(Person, doc), doc);
    }

    [Fact]
    public void RecursiveReferences()
    {
        const string tree = """
            {"$defs": {"node": {"type": "object",
                                "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                                "required": ["value"]}},
             "$ref": "#/$defs/node"}
            """;
        Assert.True(Matches(tree, """{"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": 4, "children": []}]}]}"""));
        Assert.False(Matches(tree, """{"value": 1, "children": [{"value": "2"}]}"""));
        Assert.False(Matches(tree, """{"value": 1, "children": [{}]}"""));

        const string list = """{"definitions": {"cell": {"anyOf": [{"type": "null"}, {"prefixItems": [{"type": "string"}, {"$ref": "#/definitions/cell"}]}]}}, "$ref": "#/definitions/cell"}""";
        Assert.True(Matches(list, """["a", ["b", ["c", null]]]"""));
        Assert.False(Matches(list, """["a", ["b"]]"""));

        const string self = """{"type": "object", "properties": {"next": {"$ref": "#"}}}""";
        Assert.True(Matches(self, """{"next": {"next": {}}}"""));
        Assert.False(Matches(self, """{"next": 1}"""));
    }

    [Theory]
    [InlineData("""{"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}""", "12", true)]
    [InlineData("""{"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}""", "\"ab\"", true)]
    [InlineData("""{"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}""", "\"abc\"", false)]
    [InlineData("""{"oneOf": [{"const": "x"}, {"const": 2}]}""", "2", true)]
    [InlineData("""{"oneOf": [{"const": "x"}, {"const": 2}]}""", "\"y\"", false)]
    [InlineData("""{"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "boolean"}}}]}""", """{"a": 1, "b": true}""", true)]
    [InlineData("""{"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "boolean"}}}]}""", """{"b": true}""", false)]
    [InlineData("""{"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "boolean"}}}]}""", """{"a": 1, "c": 2}""", false)]
    [InlineData("""{"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}, "maxItems": 3}""", """[1, "a", "b"]""", true)]
    [InlineData("""{"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}, "maxItems": 3}""", """[1, "a", "b", "c"]""", false)]
    [InlineData("""{"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}, "maxItems": 3}""", """["a"]""", false)]
    [InlineData("""{"type": "object", "additionalProperties": {"type": "integer"}}""", """{"x": 1, "y": 2}""", true)]
    [InlineData("""{"type": "object", "additionalProperties": {"type": "integer"}}""", """{"x": "1"}""", false)]
    [InlineData("""{"properties": {"a": {"type": "string"}}, "additionalProperties": true}""", """{"a": "s", "b": [1, {"c": null}]}""", true)]
    [InlineData("""{"properties": {"a": {"type": "string"}}, "additionalProperties": true}""", """{"a": 1}""", false)]
    [InlineData("""{"type": "string", "format": "date-time"}""", "\"2026-12-02T16:40:00.123Z\"", true)]
    [InlineData("""{"type": "string", "format": "date-time"}""", "\"2026-12-02 16:40:00Z\"", false)]
    [InlineData("""{"type": "string", "format": "time"}""", "\"23:59:59+05:30\"", true)]
    [InlineData("""{"type": "string", "pattern": "^\\(\\d{3}\\) \\d{3}-\\d{4}$"}""", "\"(555) 123-4567\"", true)]
    [InlineData("""{"type": "string", "pattern": "^\\(\\d{3}\\) \\d{3}-\\d{4}$"}""", "\"555 123-4567\"", false)]
    [InlineData("""{"type": "integer", "minimum": -1000, "maximum": 1000}""", "-1000", true)]
    [InlineData("""{"type": "integer", "minimum": -1000, "maximum": 1000}""", "-1001", false)]
    [InlineData("""{}""", """[1, "two", {"three": 3.0e0}, null, true]""", true)]
    [InlineData("""{}""", "[1,]", false)]
    public void Keywords(string schema, string doc, bool valid)
    {
        Assert.Equal(valid, Matches(schema, doc));
    }

    [Fact]
    public void JsonModeAcceptsAnyObjectOrAnyValue()
    {
        var obj = GbnfGrammar.Parse(JsonSchemaGrammar.JsonObject);
        Assert.True(obj.Matches("""{"a": [1, 2, {"b": "c\n"}], "d": null}"""));
        Assert.True(obj.Matches("{}"));
        Assert.False(obj.Matches("[]"));
        Assert.False(obj.Matches("\"s\""));
        var value = GbnfGrammar.Parse(JsonSchemaGrammar.JsonValue);
        Assert.True(value.Matches("[]"));
        Assert.True(value.Matches("-0.5E+3"));
        Assert.False(value.Matches("nul"));
    }
}
