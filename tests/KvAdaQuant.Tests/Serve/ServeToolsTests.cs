using System.Text.Json;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories260K with room for tool prompts and calls (512 positions).</summary>
public sealed class Stories260KToolsServer : IDisposable
{
    public ServeProcess Server { get; } = new("-m", "stories260K", "--ctx", "512", "--threads", "1");

    public void Dispose() => Server.Dispose();
}

/// <summary>
/// Tool calling on <c>kvaq serve</c>'s <c>/v1/chat/completions</c> with stories260K (no chat template: the generic format):
/// a required or named call is constrained into a valid call, returned as OpenAI's <c>tool_calls</c> whole and streamed;
/// calls and results of a conversation are rendered; each malformed field is a 400 naming it.
/// </summary>
public class ServeToolsTests(Stories260KToolsServer fixture) : IClassFixture<Stories260KToolsServer>
{
    private const string Schema = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}""";

    internal const string Tools = """[{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": """ + Schema + "}}]";

    private readonly ServeProcess _server = fixture.Server;

    private static string Chat(string extra, string messages = """[{"role": "user", "content": "Weather?"}]""") =>
        $$"""{"messages": {{messages}}, "tools": {{Tools}}, "max_tokens": 120{{extra}}}""";

    // A call of get_weather whose arguments are valid under Schema (checked directly and by its grammar); returns them.
    internal static string AssertWeatherCall(JsonElement call)
    {
        Assert.Matches("^call_[A-Za-z0-9]{24}$", call.GetProperty("id").GetString());
        Assert.Equal("function", call.GetProperty("type").GetString());
        Assert.Equal("get_weather", call.GetProperty("function").GetProperty("name").GetString());
        string arguments = call.GetProperty("function").GetProperty("arguments").GetString()!;
        Assert.True(GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(Schema)).Matches(arguments), arguments);
        using var doc = JsonDocument.Parse(arguments);
        var only = Assert.Single(doc.RootElement.EnumerateObject());
        Assert.Equal("city", only.Name);
        Assert.InRange(only.Value.GetString()!.Length, 0, 8);
        return arguments;
    }

    [Theory]
    [InlineData("\"tool_choice\": \"required\"")]
    [InlineData("\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}")]
    public void A_required_or_named_call_is_a_valid_tool_call_whole_and_streamed(string choice)
    {
        var (status, body) = _server.Post("/v1/chat/completions", Chat(", " + choice));
        Assert.Equal(200, status);
        var first = body.GetProperty("choices")[0];
        Assert.Equal("tool_calls", first.GetProperty("finish_reason").GetString());
        var message = first.GetProperty("message");
        Assert.Equal("assistant", message.GetProperty("role").GetString());
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        string arguments = AssertWeatherCall(Assert.Single(message.GetProperty("tool_calls").EnumerateArray()));

        // Streamed: the role, then the call's id, type, name and arguments "", then its arguments in pieces as they are
        // written (as OpenAI and llama-server: each piece with only the index and the arguments), then the finish reason.
        var (streamStatus, events) = _server.PostStream("/v1/chat/completions", Chat(", \"stream\": true, " + choice));
        Assert.Equal(200, streamStatus);
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("assistant", deltas[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.Equal("tool_calls", deltas[^1].GetProperty("finish_reason").GetString());
        var pieces = deltas.Where(d => d.GetProperty("delta").TryGetProperty("tool_calls", out _))
            .Select(d => Assert.Single(d.GetProperty("delta").GetProperty("tool_calls").EnumerateArray()))
            .ToList();
        Assert.True(pieces.Count > 3, $"{pieces.Count} deltas"); // {"city": ...} comes in several pieces
        Assert.All(pieces, p => Assert.Equal(0, p.GetProperty("index").GetInt32()));
        Assert.Equal("get_weather", pieces[0].GetProperty("function").GetProperty("name").GetString());
        Assert.Equal("function", pieces[0].GetProperty("type").GetString());
        Assert.Equal(string.Empty, pieces[0].GetProperty("function").GetProperty("arguments").GetString());
        Assert.All(pieces.Skip(1), p =>
        {
            Assert.False(p.TryGetProperty("id", out _));
            Assert.False(p.TryGetProperty("type", out _));
            Assert.False(p.GetProperty("function").TryGetProperty("name", out _));
            Assert.NotEqual(string.Empty, p.GetProperty("function").GetProperty("arguments").GetString());
        });
        Assert.DoesNotContain(deltas, d => d.GetProperty("delta").TryGetProperty("content", out var c) && c.GetString()!.Length > 0);

        // Reassembled as a client does: the same call as the whole reply (same seed), under the stream's one id.
        var call = JsonSerializer.SerializeToElement(new
        {
            id = pieces[0].GetProperty("id").GetString(),
            type = "function",
            function = new { name = "get_weather", arguments = string.Concat(pieces.Select(p => p.GetProperty("function").GetProperty("arguments").GetString())) },
        });
        Assert.Equal(arguments, AssertWeatherCall(call));
    }

    [Fact]
    public void Auto_gives_a_call_or_a_text_reply_never_a_malformed_call()
    {
        foreach (int seed in new[] { 1, 2, 3 })
        {
            var (status, body) = _server.Post("/v1/chat/completions", Chat($", \"temperature\": 1.0, \"seed\": {seed}"));
            Assert.Equal(200, status);
            var choice = body.GetProperty("choices")[0];
            var message = choice.GetProperty("message");
            switch (choice.GetProperty("finish_reason").GetString())
            {
                case "tool_calls":
                    AssertWeatherCall(Assert.Single(message.GetProperty("tool_calls").EnumerateArray()));
                    break;
                case "stop":
                    // {"response": "..."}: the text alone is the content.
                    Assert.False(message.TryGetProperty("tool_calls", out _));
                    Assert.Equal(JsonValueKind.String, message.GetProperty("content").ValueKind);
                    Assert.False(message.GetProperty("content").GetString()!.TrimStart().StartsWith("{\"", StringComparison.Ordinal));
                    break;
                default:
                    // Cut by max_tokens or the context: what there is comes back as text.
                    Assert.StartsWith("{", message.GetProperty("content").GetString(), StringComparison.Ordinal);
                    break;
            }
        }
    }

    [Fact]
    public void A_response_under_auto_streams_its_text_as_it_is_written()
    {
        // Steered into the grammar's {"response": "..."} branch: the piece after the quote in {"response biased up
        // (unsteered, stories260K always calls the tool here).
        var pieces = _server.Post("/tokenize", """{"content": "{\"response", "with_pieces": true}""").Body.GetProperty("tokens").EnumerateArray()
            .Select(e => (Id: e.GetProperty("id").GetInt32(), Piece: e.GetProperty("piece").GetString())).ToList();
        int re = pieces[pieces.FindIndex(p => p.Piece == "\"") + 1].Id;
        string request = Chat($$""", "temperature": 1.0, "seed": 3, "logit_bias": {"{{re}}": 20}""");
        var whole = _server.Post("/v1/chat/completions", request).Body.GetProperty("choices")[0];
        string finish = whole.GetProperty("finish_reason").GetString()!;
        Assert.Contains(finish, (string[])["stop", "length"]); // a text reply, whole or cut short inside its string
        Assert.False(whole.GetProperty("message").TryGetProperty("tool_calls", out _));
        string content = whole.GetProperty("message").GetProperty("content").GetString()!;
        Assert.DoesNotContain("\"response\"", content, StringComparison.Ordinal); // the string alone, also when cut short

        // Streamed: the string decoded piece by piece as it is written (not the JSON around it, not all at the end), the
        // pieces together the whole reply's content.
        var (_, events) = _server.PostStream("/v1/chat/completions", request[..^1] + ", \"stream\": true}");
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal(finish, deltas[^1].GetProperty("finish_reason").GetString());
        var texts = deltas.Select(d => d.GetProperty("delta").TryGetProperty("content", out var c) ? c.GetString() : null).Where(p => p is { Length: > 0 }).ToList();
        Assert.True(texts.Count >= 3, $"{texts.Count} content deltas for {content}");
        Assert.Equal(content, string.Concat(texts));
        Assert.DoesNotContain(deltas, d => d.GetProperty("delta").TryGetProperty("tool_calls", out _));
    }

    [Fact]
    public void A_call_cut_short_comes_back_as_its_text_whole_and_after_its_streamed_pieces()
    {
        string request = Chat(", \"tool_choice\": \"required\"").Replace("\"max_tokens\": 120", "\"max_tokens\": 66", StringComparison.Ordinal);
        var whole = _server.Post("/v1/chat/completions", request).Body.GetProperty("choices")[0];
        Assert.Equal("length", whole.GetProperty("finish_reason").GetString());
        string text = whole.GetProperty("message").GetProperty("content").GetString()!;
        Assert.Contains("\"arguments\" : { \"city\" : \"", text, StringComparison.Ordinal); // cut inside the arguments

        var (_, events) = _server.PostStream("/v1/chat/completions", request[..^1] + ", \"stream\": true}");
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("length", deltas[^1].GetProperty("finish_reason").GetString());
        Assert.Contains(deltas, d => d.GetProperty("delta").TryGetProperty("tool_calls", out _)); // the call's first pieces went out as written
        Assert.Equal(text, string.Concat(deltas.Select(d => d.GetProperty("delta").TryGetProperty("content", out var c) ? c.GetString() : null)));
    }

    [Fact]
    public void Each_choice_is_read_back_on_its_own_whole_and_streamed()
    {
        const string extra = ", \"tool_choice\": \"required\", \"n\": 2, \"temperature\": 0.9, \"seed\": 5";
        var (status, body) = _server.Post("/v1/chat/completions", Chat(extra));
        Assert.Equal(200, status);
        var whole = body.GetProperty("choices").EnumerateArray().Select(c =>
        {
            Assert.Equal("tool_calls", c.GetProperty("finish_reason").GetString());
            return AssertWeatherCall(Assert.Single(c.GetProperty("message").GetProperty("tool_calls").EnumerateArray()));
        }).ToList();
        Assert.Equal(2, whole.Count);

        // Streamed: each choice's call under its own index, the same arguments as the whole reply's choice (seed + index).
        var (_, events) = _server.PostStream("/v1/chat/completions", Chat(extra + ", \"stream\": true"));
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        for (int i = 0; i < 2; i++)
        {
            var mine = chunks.Where(c => c.GetProperty("index").GetInt32() == i).ToList();
            Assert.Equal("tool_calls", mine[^1].GetProperty("finish_reason").GetString());
            string arguments = string.Concat(mine
                .Where(c => c.GetProperty("delta").TryGetProperty("tool_calls", out _))
                .Select(c => c.GetProperty("delta").GetProperty("tool_calls")[0].GetProperty("function").GetProperty("arguments").GetString()));
            Assert.Equal(whole[i], arguments);
        }
    }

    [Fact]
    public void Log_probabilities_of_a_call_come_whole_and_streamed_with_its_pieces()
    {
        const string extra = ", \"tool_choice\": \"required\", \"logprobs\": true";
        var (_, body) = _server.Post("/v1/chat/completions", Chat(extra));
        var choice = body.GetProperty("choices")[0];
        int tokens = body.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        var entries = choice.GetProperty("logprobs").GetProperty("content");
        Assert.InRange(entries.GetArrayLength(), tokens - 1, tokens); // the end token has no text
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());

        var (_, events) = _server.PostStream("/v1/chat/completions", Chat(extra + ", \"stream\": true"));
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        // Each token's entry on the delta sent after it (the call's pieces), all of them once, in order.
        var streamed = chunks.Where(c => c.TryGetProperty("logprobs", out var lp) && lp.ValueKind != JsonValueKind.Null).ToList();
        Assert.True(streamed.Count > 1);
        Assert.All(streamed, c => Assert.True(c.GetProperty("delta").TryGetProperty("tool_calls", out _)));
        Assert.Equal(
            entries.EnumerateArray().Select(e => e.GetRawText()),
            streamed.SelectMany(c => c.GetProperty("logprobs").GetProperty("content").EnumerateArray()).Select(e => e.GetRawText()));
    }

    [Fact]
    public void Parallel_calls_are_an_array_of_valid_calls()
    {
        // stories260K tends to go on adding calls to the array: what is cut short by max_tokens comes back as text.
        var (status, body) = _server.Post("/v1/chat/completions", Chat(", \"tool_choice\": \"required\", \"parallel_tool_calls\": true, \"max_tokens\": 200"));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        var message = choice.GetProperty("message");
        if (choice.GetProperty("finish_reason").GetString() == "tool_calls")
        {
            var calls = message.GetProperty("tool_calls").EnumerateArray().ToList();
            Assert.NotEmpty(calls);
            Assert.All(calls, c => AssertWeatherCall(c));
            Assert.Equal(calls.Count, calls.Select(c => c.GetProperty("id").GetString()).Distinct().Count());
        }
        else
        {
            Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
            Assert.Matches("""^\{\s*"tool_calls"\s*:\s*\[\s*\{\s*"name"\s*:\s*"get_weather"\s*,\s*"arguments""", message.GetProperty("content").GetString());
        }
    }

    [Fact]
    public void A_round_trip_with_a_tool_result_is_rendered_and_answered()
    {
        const string messages = """
            [{"role": "user", "content": "Weather?"},
             {"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
             {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny"}]
            """;
        var (applied, prompt) = _server.Post("/apply-template", Chat(string.Empty, messages));
        Assert.Equal(200, applied);
        string text = prompt.GetProperty("prompt").GetString()!;
        Assert.StartsWith("You can call these tools:\n{\"name\":\"get_weather\",\"description\":\"Weather\",\"parameters\":{", text, StringComparison.Ordinal);
        Assert.EndsWith(
            "Weather?{\"tool_call\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}}{\"tool_response\":{\"tool\":\"get_weather\",\"tool_call_id\":\"call_abc\",\"content\":\"Sunny\"}}",
            text,
            StringComparison.Ordinal);

        var (status, body) = _server.Post("/v1/chat/completions", Chat(", \"max_tokens\": 60, \"tool_choice\": \"required\"", messages));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        if (choice.GetProperty("finish_reason").GetString() == "tool_calls")
        {
            AssertWeatherCall(Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray()));
        }
        else
        {
            Assert.Equal("length", choice.GetProperty("finish_reason").GetString()); // a call cut short comes back as text
            Assert.StartsWith("{", choice.GetProperty("message").GetProperty("content").GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Tool_choice_none_offers_no_tools_and_answers_in_text()
    {
        var (_, prompt) = _server.Post("/apply-template", Chat(", \"tool_choice\": \"none\""));
        Assert.Equal("Weather?", prompt.GetProperty("prompt").GetString());
        var (status, body) = _server.Post("/v1/chat/completions", Chat(", \"tool_choice\": \"none\", \"max_tokens\": 8"));
        Assert.Equal(200, status);
        var message = body.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(JsonValueKind.String, message.GetProperty("content").ValueKind);
        Assert.False(message.TryGetProperty("tool_calls", out _));
    }

    private const string User = """[{"role": "user", "content": "Hi"}]""";

    [Theory]
    [InlineData("\"tools\": \"x\"", "tools", "tools must be an array of {\"type\": \"function\", \"function\": {...}} objects, got \"x\"")]
    [InlineData("\"tools\": [5]", "tools", "tools[0] must be an object {\"type\": \"function\", \"function\": {...}}, got 5")]
    [InlineData("\"tools\": [{\"function\": {\"name\": \"f\"}}]", "tools", "tools[0].type is missing (\"function\")")]
    [InlineData("\"tools\": [{\"type\": \"retrieval\", \"function\": {\"name\": \"f\"}}]", "tools", "tools[0].type must be \"function\" (the only kind of tool kvaq serve calls), got \"retrieval\"")]
    [InlineData("\"tools\": [{\"type\": \"function\"}]", "tools", "tools[0].function is missing")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"description\": \"d\"}}]", "tools", "tools[0].function.name is missing")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"bad name\"}}]", "tools", "tools[0].function.name must be 1 to 64 letters, digits, _ or -, got \"bad name\"")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": 3}}]", "tools", "tools[0].function.description must be a string, got 3")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": \"x\"}}]", "tools", "tools[0].function.parameters must be a JSON Schema object, got \"x\"")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, {\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", "tools", "tools[1].function.name: 'f' is given twice")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"sometimes\"", "tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}, got \"sometimes\"")]
    [InlineData("\"tool_choice\": \"required\"", "tool_choice", "tool_choice \"required\" needs tools to call; the request offers none")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"g\"}}", "tool_choice", "tool_choice.function.name: 'g' is not among the tools (f)")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\"}", "tool_choice", "tool_choice.function is missing (an object with the name of the function to call)")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": 3", "tool_choice", "tool_choice must be a string or an object, got 3")]
    [InlineData("\"parallel_tool_calls\": \"yes\"", "parallel_tool_calls", "parallel_tool_calls must be true or false, got \"yes\"")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"response_format\": {\"type\": \"json_object\"}", "response_format", "tools and response_format both constrain the output; give one of them (or tool_choice \"none\")")]
    public void A_malformed_tool_field_is_a_400_naming_it(string fields, string param, string message)
    {
        var (status, body) = _server.Post("/v1/chat/completions", $$"""{"messages": {{User}}, {{fields}}}""");
        Assert.Equal(400, status);
        var error = body.GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(message, error.GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("""[{"role": "user", "content": "Hi"}, {"role": "tool", "content": "Sunny"}]""", "messages[1].tool_call_id is required (the id of the call this result answers)")]
    [InlineData("""[{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": 7, "content": "Sunny"}]""", "messages[1].tool_call_id must be a string, got 7")]
    [InlineData("""[{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "not json"}}]}]""", "messages[0].tool_calls[0].function.arguments must be a JSON object as a string, got \"not json\"")]
    [InlineData("""[{"role": "assistant", "tool_calls": [{"type": "function"}]}]""", "messages[0].tool_calls[0].function is missing (an object with name and arguments)")]
    [InlineData("""[{"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}]""", "messages[0].tool_calls[0].function.name is missing")]
    [InlineData("""[{"role": "assistant", "tool_calls": {"id": "x"}}]""", "messages[0].tool_calls must be an array of calls, got {\"id\": \"x\"}")]
    [InlineData("""[{"role": "assistant", "content": null}]""", "messages[0].content is required (a string)")]
    [InlineData("""[{"role": "function", "content": "x"}]""", "messages[0].role: unknown role 'function'; expected system, user, assistant or tool")]
    public void A_malformed_tool_message_is_a_400_naming_it(string messages, string message)
    {
        var (status, body) = _server.Post("/v1/chat/completions", $$"""{"messages": {{messages}}}""");
        Assert.Equal(400, status);
        Assert.Equal("messages", body.GetProperty("error").GetProperty("param").GetString());
        Assert.Equal(message, body.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public void A_schema_the_grammar_cannot_follow_is_a_400_naming_the_tool()
    {
        var (status, body) = _server.Post("/v1/chat/completions", "{\"messages\": " + User + ""","tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}]}""");
        Assert.Equal(400, status);
        Assert.Equal("tools", body.GetProperty("error").GetProperty("param").GetString());
        Assert.StartsWith("tools[0].function.parameters: ", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }
}
