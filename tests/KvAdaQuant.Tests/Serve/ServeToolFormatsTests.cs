using System.Text.Json;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// Each tool format end to end on stories3M-q80 (chosen with <c>serve --tool-format</c>; the model has no chat template, so
/// the tools, instructions and calls are plain text before the conversation): the prompt offers the tools in the format's
/// words, and a required call comes back, whole and streamed, as a valid <c>tool_calls</c> entry read from the format's syntax.
/// </summary>
public class ServeToolFormatsTests
{
    [Theory]
    [InlineData("generic", "You can call these tools:\n{\"name\":\"get_weather\"")]
    [InlineData("llama3", "Given the following functions, please respond with a JSON for a function call")]
    [InlineData("hermes", "# Tools\n\nYou may call one or more functions to assist with the user query.")]
    public void A_required_call_in_each_format_is_a_valid_tool_call(string format, string offer)
    {
        using var server = new ServeProcess("-m", "stories3M-q80", "--ctx", "512", "--threads", "1", "--tool-format", format);
        Assert.Contains($"tool calls {format};", server.Stderr, StringComparison.Ordinal);
        Assert.Equal(format, server.Get("/v1/models").Body.GetProperty("data")[0].GetProperty("meta").GetProperty("tool_format").GetString());
        Assert.Equal(format, server.Get("/props").Body.GetProperty("tool_format").GetString());
        string request = $$"""{"messages": [{"role": "user", "content": "Weather?"}], "tools": {{ServeToolsTests.Tools}}, "tool_choice": "required", "max_tokens": 160""";

        var (_, prompt) = server.Post("/apply-template", request + "}");
        Assert.StartsWith(offer, prompt.GetProperty("prompt").GetString(), StringComparison.Ordinal);
        Assert.EndsWith("Weather?", prompt.GetProperty("prompt").GetString(), StringComparison.Ordinal);

        var (status, body) = server.Post("/v1/chat/completions", request + "}");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        string arguments = ServeToolsTests.AssertWeatherCall(Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray()));

        var (_, events) = server.PostStream("/v1/chat/completions", request + ", \"stream\": true}");
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("tool_calls", deltas[^1].GetProperty("finish_reason").GetString());
        var pieces = deltas.Where(d => d.GetProperty("delta").TryGetProperty("tool_calls", out _))
            .Select(d => d.GetProperty("delta").GetProperty("tool_calls")[0].GetProperty("function"))
            .ToList();
        Assert.Equal("get_weather", pieces[0].GetProperty("name").GetString());
        Assert.Equal(string.Empty, pieces[0].GetProperty("arguments").GetString()); // the arguments follow in pieces
        Assert.True(pieces.Count > 3, $"{pieces.Count} deltas");
        Assert.All(pieces.Skip(1), p => Assert.False(p.TryGetProperty("name", out _)));
        Assert.Equal(arguments, string.Concat(pieces.Select(p => p.GetProperty("arguments").GetString())));
    }

    [Fact]
    public void Auto_in_hermes_is_free_text_until_tool_call_then_the_lazy_grammar_makes_a_valid_call()
    {
        using var server = new ServeProcess("-m", "stories3M-q80", "--ctx", "512", "--threads", "1", "--tool-format", "hermes");

        // Steered: the pieces of " Lily<tool_call>" (tokenize adds the leading space), each biased less than the one before
        // and pushed down once used (presence_penalty over the last 8 tokens), so greedy writes exactly that; after the
        // trigger the biases stay (and would write "<tool_call>" again), but the lazy grammar allows only a call.
        var pieces = server.Post("/tokenize", """{"content": "Lily<tool_call>", "with_pieces": true}""").Body.GetProperty("tokens").EnumerateArray()
            .Select(e => (Id: e.GetProperty("id").GetInt32(), Piece: e.GetProperty("piece").GetString()!)).ToList();
        Assert.Equal(pieces.Count, pieces.DistinctBy(p => p.Id).Count());
        string Request(bool trigger) => $$"""{"messages": [{"role": "user", "content": "Weather?"}], "tools": {{ServeToolsTests.Tools}}, "max_tokens": 160, "presence_penalty": 5000, "repeat_last_n": 8, "logit_bias": {{{string.Join(", ", pieces.Select((p, i) => $"\"{p.Id}\": {(trigger || p.Piece != "<" ? 100 * (pieces.Count - i) : 0)}"))}}}""";
        string request = Request(trigger: true);

        var (status, body) = server.Post("/v1/chat/completions", request + "}");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("eos", body.GetProperty("kvaq").GetProperty("stop_reason").GetString()); // the grammar completed, then EOS
        Assert.Equal("Lily", choice.GetProperty("message").GetProperty("content").GetString()); // the free text before the call
        string arguments = ServeToolsTests.AssertWeatherCall(Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray()));

        // Without the trigger (the same biases less "<"), auto stays free: the reply is text, no call.
        var plain = server.Post("/v1/chat/completions", Request(trigger: false) + "}").Body.GetProperty("choices")[0];
        Assert.NotEqual("tool_calls", plain.GetProperty("finish_reason").GetString());
        string text = plain.GetProperty("message").GetProperty("content").GetString()!;
        Assert.StartsWith("Lilytool_call>", text.TrimStart(), StringComparison.Ordinal);

        // Streamed, that text comes as it is written (a call may follow any Hermes text, so only an end that may begin
        // "<tool_call>" and whitespace a call would trim are held back), the pieces together the whole reply's content.
        var (_, textEvents) = server.PostStream("/v1/chat/completions", Request(trigger: false) + ", \"stream\": true}");
        var textPieces = textEvents[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var t) ? t.GetString() : null).Where(p => p is { Length: > 0 }).ToList();
        Assert.True(textPieces.Count >= 10, $"{textPieces.Count} content deltas");
        Assert.Equal(text, string.Concat(textPieces));

        // Streamed: the same call (same seed, greedy), the text before it first (as the model wrote it, " Lily"; the whole
        // reply's content is trimmed around its calls).
        var (_, events) = server.PostStream("/v1/chat/completions", request + ", \"stream\": true}");
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("tool_calls", deltas[^1].GetProperty("finish_reason").GetString());
        int first = deltas.FindIndex(d => d.GetProperty("delta").TryGetProperty("content", out var t) && t.GetString() is { Length: > 0 });
        Assert.Equal(" Lily", Assert.Single(deltas, d => d.GetProperty("delta").TryGetProperty("content", out var t) && t.GetString() is { Length: > 0 }).GetProperty("delta").GetProperty("content").GetString());
        Assert.True(first < deltas.FindIndex(d => d.GetProperty("delta").TryGetProperty("tool_calls", out _)));

        // Cut by max_tokens anywhere (inside the trigger word, the call's name, its arguments), the stream still adds up to
        // the whole reply: the same finish reason, content deltas that make its content (text, or the text of a call cut
        // short), no text twice.
        for (int max = 1; max <= 72; max += 2)
        {
            string cut = request.Replace("\"max_tokens\": 160", $"\"max_tokens\": {max}", StringComparison.Ordinal);
            var wholeCut = server.Post("/v1/chat/completions", cut + "}").Body.GetProperty("choices")[0];
            var (_, cutEvents) = server.PostStream("/v1/chat/completions", cut + ", \"stream\": true}");
            var cutDeltas = cutEvents[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
            Assert.Equal(wholeCut.GetProperty("finish_reason").GetString(), cutDeltas[^1].GetProperty("finish_reason").GetString());
            string wholeText = wholeCut.GetProperty("message").GetProperty("content").GetString() ?? string.Empty;
            string streamedText = string.Concat(cutDeltas.Select(d => d.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : null));
            bool calls = wholeCut.GetProperty("message").TryGetProperty("tool_calls", out _);
            Assert.True(calls ? streamedText.TrimStart() == wholeText : streamedText == wholeText, $"max_tokens {max}: whole {JsonSerializer.Serialize(wholeText)}, streamed {JsonSerializer.Serialize(streamedText)}");
        }
        var streamed = deltas.Where(d => d.GetProperty("delta").TryGetProperty("tool_calls", out _))
            .Select(d => d.GetProperty("delta").GetProperty("tool_calls")[0].GetProperty("function"))
            .ToList();
        Assert.Equal(arguments, string.Concat(streamed.Select(p => p.GetProperty("arguments").GetString())));
    }

    [Fact]
    public void Auto_in_llama3_constrains_a_reply_that_starts_as_a_call_and_leaves_other_text_free()
    {
        using var server = new ServeProcess("-m", "stories3M-q80", "--ctx", "512", "--threads", "1", "--tool-format", "llama3");

        // Steered as in the hermes test: greedy writes the pieces of the trigger word { "name" (distinct tokens here), each
        // biased less than the one before and pushed down once used; after the word the lazy grammar allows only a call.
        List<int> Pieces(string text) => [.. server.Post("/tokenize", $$"""{"content": {{JsonSerializer.Serialize(text)}}, "with_pieces": true}""").Body.GetProperty("tokens").EnumerateArray()
            .Where(e => e.GetProperty("piece").GetString() != " ").Select(e => e.GetProperty("id").GetInt32())];
        var trigger = Pieces("{ \"name\"");
        Assert.Equal(trigger.Count, trigger.Distinct().Count());
        string Request(List<int> ladder) => $$$"""{"messages": [{"role": "user", "content": "Weather?"}], "tools": {{{ServeToolsTests.Tools}}}, "max_tokens": 160, "presence_penalty": 5000, "repeat_last_n": 8, "logit_bias": {{{{string.Join(", ", ladder.Select((id, i) => $"\"{id}\": {100 * (ladder.Count - i)}"))}}}}}""";

        var (status, body) = server.Post("/v1/chat/completions", Request(trigger));
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("message").GetProperty("content").ValueKind);
        ServeToolsTests.AssertWeatherCall(Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray()));

        // The same word after other text is not at the start of the reply: no trigger, the reply stays free text.
        var plain = server.Post("/v1/chat/completions", Request([.. Pieces("x"), .. trigger])).Body.GetProperty("choices")[0];
        Assert.NotEqual("tool_calls", plain.GetProperty("finish_reason").GetString());
        string content = plain.GetProperty("message").GetProperty("content").GetString()!;
        Assert.StartsWith("x{ \"name\"", content.TrimStart(), StringComparison.Ordinal);

        // Streamed, that text comes as it is generated (it cannot become a call), not at the end: many content deltas.
        var (_, events) = server.PostStream("/v1/chat/completions", Request([.. Pieces("x"), .. trigger])[..^1] + ", \"stream\": true}");
        var deltas = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        var texts = deltas.Select(d => d.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : null).Where(t => !string.IsNullOrEmpty(t)).ToList();
        Assert.True(texts.Count > 10, $"{texts.Count} content deltas");
        Assert.Equal(content, string.Concat(texts));
        Assert.Equal(plain.GetProperty("finish_reason").GetString(), deltas[^1].GetProperty("finish_reason").GetString());
    }
}
