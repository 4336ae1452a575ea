using System.Text.Json;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories260K with room for constrained replies (512 positions, two slots).</summary>
public sealed class Stories260KGrammarServer : IDisposable
{
    public ServeProcess Server { get; } = new("-m", "stories260K", "--ctx", "512", "--threads", "1", "--parallel", "2");

    public void Dispose() => Server.Dispose();
}

/// <summary>
/// Output constraints on <c>kvaq serve</c>: llama-server's <c>grammar</c> and <c>json_schema</c>, OpenAI's <c>response_format</c>
/// (<c>json_object</c>, <c>json_schema</c>) on the three generation endpoints, whole and streamed, each choice with its own grammar
/// state; a bad grammar or schema is a 400 naming the field and the problem.
/// </summary>
public class ServeGrammarTests(Stories260KGrammarServer fixture) : IClassFixture<Stories260KGrammarServer>
{
    private const string Schema = """
        {"type": "object",
         "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 0, "maximum": 99}, "word": {"type": "string", "maxLength": 6}},
         "required": ["answer", "count"]}
        """;

    private readonly ServeProcess _server = fixture.Server;

    // The reply parses as JSON and is valid under Schema (checked directly) and under the grammar.
    private static void AssertValid(string content)
    {
        Assert.True(GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(Schema)).Matches(content), content);
        using var doc = JsonDocument.Parse(content);
        var root = doc.RootElement;
        Assert.Contains(root.GetProperty("answer").GetString(), new[] { "yes", "no" });
        Assert.InRange(root.GetProperty("count").GetInt32(), 0, 99);
        foreach (var p in root.EnumerateObject())
        {
            Assert.Contains(p.Name, new[] { "answer", "count", "word" });
        }

        if (root.TryGetProperty("word", out var word))
        {
            Assert.True(word.GetString()!.Length <= 6, content);
        }
    }

    private static string Chat(string constraint, string extra = "") =>
        $$"""{"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 300{{extra}}, {{constraint}}}""";

    [Theory]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"reply\", \"strict\": true, \"schema\": " + Schema + "}}")]
    [InlineData("\"response_format\": {\"type\": \"json_object\", \"schema\": " + Schema + "}")]
    [InlineData("\"json_schema\": " + Schema)]
    public void A_chat_completion_with_a_schema_is_valid_json_whole_and_streamed(string constraint)
    {
        var (status, body) = _server.Post("/v1/chat/completions", Chat(constraint));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        string content = choice.GetProperty("message").GetProperty("content").GetString()!;
        AssertValid(content);
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());

        var (streamStatus, events) = _server.PostStream("/v1/chat/completions", Chat(constraint, ", \"stream\": true"));
        Assert.Equal(200, streamStatus);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        string streamed = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var d) ? d.GetString() : string.Empty));
        Assert.Equal(content, streamed);
        Assert.Equal("stop", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public void Json_mode_gives_an_object()
    {
        var (status, body) = _server.Post("/v1/chat/completions", Chat("\"response_format\": {\"type\": \"json_object\"}", ", \"max_tokens\": 400, \"temperature\": 0.8, \"seed\": 3"));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        if (choice.GetProperty("finish_reason").GetString() == "stop")
        {
            string content = choice.GetProperty("message").GetProperty("content").GetString()!;
            using var doc = JsonDocument.Parse(content);
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
        }
        else
        {
            // Cut by max_tokens: what there is is the start of an object.
            Assert.StartsWith("{", choice.GetProperty("message").GetProperty("content").GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Each_choice_and_each_concurrent_request_follows_its_own_grammar_state()
    {
        string request = Chat("\"json_schema\": " + Schema, ", \"n\": 3, \"temperature\": 1.0, \"seed\": 11");
        var results = Enumerable.Range(0, 2).AsParallel().Select(_ => _server.Post("/v1/chat/completions", request)).ToList();
        foreach (var (status, body) in results)
        {
            Assert.Equal(200, status);
            var choices = body.GetProperty("choices").EnumerateArray().ToList();
            Assert.Equal(3, choices.Count);
            foreach (var choice in choices)
            {
                AssertValid(choice.GetProperty("message").GetProperty("content").GetString()!);
            }
        }

        // The same request, the same choices (seed + i per choice), whichever slot ran them.
        Assert.Equal(results[0].Body.GetProperty("choices").GetRawText(), results[1].Body.GetProperty("choices").GetRawText());
    }

    [Fact]
    public void A_grammar_on_completion_and_v1_completions()
    {
        const string grammar = "root ::= (\"yes\" | \"no\" | \"maybe\") \".\"";
        string json = JsonSerializer.Serialize(new { prompt = "Once upon a time", n_predict = 20, grammar });
        var (status, body) = _server.Post("/completion", json);
        Assert.Equal(200, status);
        Assert.Contains(body.GetProperty("content").GetString(), new[] { "yes.", "no.", "maybe." });

        // /completion's stream (no [DONE]: llama-server's native shape).
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/completion") { Content = new StringContent(json.Replace("}", ", \"stream\": true}", StringComparison.Ordinal), System.Text.Encoding.UTF8, "application/json") })
        {
            using var response = _server.Client.Send(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(200, (int)response.StatusCode);
            using var reader = new StreamReader(response.Content.ReadAsStream(), System.Text.Encoding.UTF8);
            var events = reader.ReadToEnd().Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(b => JsonDocument.Parse(b["data: ".Length..]).RootElement.Clone()).ToList();
            Assert.Equal(body.GetProperty("content").GetString(), string.Concat(events.Select(e => e.GetProperty("content").GetString())));
            Assert.True(events[^1].GetProperty("stop").GetBoolean());
        }

        var (v1Status, v1) = _server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = "Once upon a time", max_tokens = 20, grammar }));
        Assert.Equal(200, v1Status);
        Assert.Equal(body.GetProperty("content").GetString(), v1.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal("stop", v1.GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        var (jsStatus, js) = _server.Post("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 300, \"json_schema\": " + Schema + "}");
        Assert.Equal(200, jsStatus);
        AssertValid(js.GetProperty("choices")[0].GetProperty("text").GetString()!);
    }

    [Theory]
    [InlineData("/completion", """{"prompt": "Hi", "grammar": "root ::= [a-z"}""", "grammar", "grammar: ")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "grammar": "start ::= \"x\""}""", "grammar", "grammar: ")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "grammar": 5}""", "grammar", "grammar must be a string of GBNF rules, got 5")]
    [InlineData("/completion", """{"prompt": "Hi", "json_schema": {"properties": {"age": {"type": "integer", "multipleOf": 3}}}}""", "json_schema", "json_schema: /properties/age/multipleOf: \"multipleOf\" is not supported")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "email"}}}}""", "response_format", "response_format.json_schema.schema: /format: format \"email\" is not supported (supported: date, time, date-time, uuid)")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object", "schema": {"$ref": "#/$defs/none"}}}""", "response_format", "response_format.schema: /$ref: \"$ref\": \"#/$defs/none\" points to nothing in the document")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_schema"}}""", "response_format", "response_format.json_schema must be an object holding the schema")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "xml"}}""", "response_format", "response_format {\"type\": \"xml\"} is not supported: its type must be \"text\", \"json_object\" or \"json_schema\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "grammar": "root ::= \"x\"", "json_schema": {}}""", "json_schema", "grammar and json_schema both constrain the output; give one of them")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "json_schema": {}, "response_format": {"type": "json_object"}}""", "response_format", "json_schema and response_format both constrain the output; give one of them")]
    public void Bad_constraints_are_400_naming_the_field_and_the_problem(string path, string json, string param, string message)
    {
        var (status, body) = _server.Post(path, json);
        Assert.Equal(400, status);
        var error = body.GetProperty("error");
        Assert.Contains(message, error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(param, error.GetProperty("param").GetString());
    }
}
