using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c> on stories260K (FP32 cache): completions and chat completions equal the library's <see cref="Generator"/>
/// and <see cref="ChatSession"/> runs, streamed or whole; stop texts, token limits, usage, tokenize/detokenize, and every
/// bad request refused with OpenAI's error shape naming the field.
/// </summary>
public class ServeCompletionTests(Stories260KServer fixture) : IClassFixture<Stories260KServer>
{
    internal const string Prompt = "Once upon a time";
    private readonly ServeProcess _server = fixture.Server;

    [Fact]
    public void Greedy_completion_equals_the_generator_token_for_token_with_exact_usage()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.Generate(Prompt, 24);
        Assert.Equal("max_tokens", expected.StopReason);

        var (status, body) = _server.Post("/v1/completions", """{"model": "whatever", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}""");
        Assert.Equal(200, status);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", body.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("stories260K.bin", body.GetProperty("model").GetString());
        var choice = Assert.Single(body.GetProperty("choices").EnumerateArray());
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal(expected.Text, choice.GetProperty("text").GetString());
        Assert.Equal(expected.Tokens, reference.Tokenizer.Encode(Prompt + choice.GetProperty("text").GetString(), addBos: true).Skip(expected.PromptTokens.Count));
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        AssertUsage(body, expected.PromptTokens.Count, 24);
        var kvaq = body.GetProperty("kvaq");
        Assert.Equal("fp32", kvaq.GetProperty("kv").GetString());
        Assert.Equal(expected.KvBytes, kvaq.GetProperty("kv_bytes").GetInt64());
        Assert.Equal(Stories260KServer.Ctx, kvaq.GetProperty("ctx").GetInt32());
        Assert.Equal("cpu", kvaq.GetProperty("device").GetString());
        Assert.True(kvaq.GetProperty("decode_tokens_per_second").GetDouble() > 0);
    }

    [Fact]
    public void Streamed_chunks_concatenate_to_the_whole_text_and_end_with_done()
    {
        const string request = """{"prompt": "Once upon a time", "max_tokens": 30}""";
        var (status, whole) = _server.Post("/v1/completions", request);
        Assert.Equal(200, status);
        string text = whole.GetProperty("choices")[0].GetProperty("text").GetString()!;

        var (streamStatus, events) = _server.PostStream("/v1/completions", request.Replace("}", ", \"stream\": true}", StringComparison.Ordinal));
        Assert.Equal(200, streamStatus);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.True(chunks.Count > 10, $"{chunks.Count} chunks");
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        Assert.Equal(text, string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
        Assert.Equal("length", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        AssertUsage(chunks[^1], 5, 30);
    }

    [Fact]
    public void Sampling_with_a_seed_equals_the_sampler_and_repeats()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.Generate(Prompt, 20, new Sampler(0.9f, 40, 0.95f, 7));
        const string request = """{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 7}""";
        var first = _server.Post("/v1/completions", request).Body.GetProperty("choices")[0].GetProperty("text").GetString();
        var second = _server.Post("/v1/completions", request).Body.GetProperty("choices")[0].GetProperty("text").GetString();
        Assert.Equal(expected.Text, first);
        Assert.Equal(first, second);
        Assert.NotEqual(reference.Generate(Prompt, 20).Text, first); // not the greedy text: the fields were used
    }

    [Fact]
    public void Logit_bias_in_either_form_equals_the_sampler_with_the_same_biases()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.Generate(Prompt, 16, new Sampler { LogitBias = new Dictionary<int, float> { [383] = float.NegativeInfinity, [261] = 2.5f } });
        Assert.DoesNotContain(383, expected.Tokens);
        foreach (var bias in new[] { """{"383": false, "261": 2.5}""", """[[383, false], [261, 2.5]]""", """{"383": -1e30, "261": 2.5}""" })
        {
            var (status, body) = _server.Post("/v1/completions", $$"""{"prompt": "Once upon a time", "max_tokens": 16, "logit_bias": {{bias}}}""");
            Assert.Equal(200, status);
            Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
        }
    }

    [Fact]
    public void Min_p_and_the_penalties_equal_the_sampler_set_the_same_way()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var sampler = new Sampler(0f, 0, 1f, 42) { RepeatPenalty = 1.3f, RepeatLastN = 16, PresencePenalty = 0.2f, FrequencyPenalty = 0.1f };
        var expected = reference.Generate(Prompt, 30, sampler);
        const string request = """{"prompt": "Once upon a time", "max_tokens": 30, "repeat_penalty": 1.3, "repeat_last_n": 16, "presence_penalty": 0.2, "frequency_penalty": 0.1}""";
        var text = _server.Post("/v1/completions", request).Body.GetProperty("choices")[0].GetProperty("text").GetString();
        Assert.Equal(expected.Text, text);
        Assert.NotEqual(reference.Generate(Prompt, 30).Text, text); // not the greedy text: the fields were used

        var minP = reference.Generate(Prompt, 20, new Sampler(1f, 0, 1f, 9) { MinP = 0.2f });
        const string sampled = """{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 1, "seed": 9, "min_p": 0.2}""";
        Assert.Equal(minP.Text, _server.Post("/v1/completions", sampled).Body.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact]
    public void Chat_completion_equals_a_chat_session_reply_whole_and_streamed()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.ChatReply(ChatTemplate.None, "Once upon a time,", " there was a dog", 16);
        const string request = """{"messages": [{"role": "system", "content": "Once upon a time,"}, {"role": "user", "content": " there was a dog"}], "max_tokens": 16}""";
        var (status, body) = _server.Post("/v1/chat/completions", request);
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        Assert.StartsWith("chatcmpl-", body.GetProperty("id").GetString(), StringComparison.Ordinal);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        string content = choice.GetProperty("message").GetProperty("content").GetString()!;
        Assert.Equal(expected.Text, content);
        Assert.Equal(expected.StopReason == "eos" ? "stop" : "length", choice.GetProperty("finish_reason").GetString());
        AssertUsage(body, expected.PromptTokens.Count, expected.Tokens.Count);

        // Content as OpenAI's text parts: the same conversation.
        var (_, parts) = _server.Post("/v1/chat/completions", """{"messages": [{"role": "system", "content": [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time,"}]}, {"role": "user", "content": " there was a dog"}], "max_tokens": 16}""");
        Assert.Equal(content, parts.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());

        var (streamStatus, events) = _server.PostStream("/v1/chat/completions", request.Replace("\"max_tokens\"", "\"stream\": true, \"max_tokens\"", StringComparison.Ordinal));
        Assert.Equal(200, streamStatus);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        string streamed = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var d) ? d.GetString() : string.Empty));
        Assert.Equal(content, streamed);
        Assert.Equal(choice.GetProperty("finish_reason").GetString(), chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        AssertUsage(chunks[^1], expected.PromptTokens.Count, expected.Tokens.Count);
    }

    [Fact]
    public void Stop_texts_end_the_text_before_them_even_inside_a_token_and_streaming_holds_back_the_same()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var full = reference.Generate(Prompt, 40);
        // A stop text that starts inside the text the model writes, whatever its token boundaries: characters 10-13.
        string stop = full.Text.Substring(10, 4);
        int at = full.Text.IndexOf(stop, StringComparison.Ordinal);
        string request = JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 40, stop = new[] { "zzzz", stop } });
        var (status, body) = _server.Post("/v1/completions", request);
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(full.Text[..at], choice.GetProperty("text").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("stop_text", body.GetProperty("kvaq").GetProperty("stop_reason").GetString());
        int generated = body.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        Assert.InRange(generated, 1, 39);

        // The token that completed the stop text is the last one generated: the text of one token fewer does not hold it.
        Assert.DoesNotContain(stop, reference.Tokenizer.Decode(full.Tokens.Take(generated - 1).ToList()), StringComparison.Ordinal);
        Assert.Contains(stop, reference.Tokenizer.Decode(full.Tokens.Take(generated).ToList()), StringComparison.Ordinal);

        var (_, events) = _server.PostStream("/v1/completions", request.Replace("}", ",\"stream\":true}", StringComparison.Ordinal));
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.Equal(full.Text[..at], string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal("stop", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        // A single stop string works as the array does.
        var (_, single) = _server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 40, stop }));
        Assert.Equal(full.Text[..at], single.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact]
    public void Without_max_tokens_a_completion_runs_until_the_context_is_full_or_eos_as_the_generator()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = reference.Generate(Prompt, 10_000);
        var (status, body) = _server.Post("/v1/completions", """{"prompt": "Once upon a time"}""");
        Assert.Equal(200, status);
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(expected.StopReason == "eos" ? "stop" : "length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        AssertUsage(body, 5, expected.Tokens.Count);
        Assert.Equal(expected.StopReason, body.GetProperty("kvaq").GetProperty("stop_reason").GetString());
    }

    [Fact]
    public void A_prompt_that_extends_the_previous_request_reuses_its_cache_with_the_fresh_result() =>
        AssertPromptCacheReuse(_server, "stories260K", "fp32", Stories260KServer.Ctx, null);

    /// <summary>
    /// cache_prompt: a request whose prompt is the previous request's prompt and reply and more runs only the new tokens
    /// (kvaq.cached_tokens: the previous prompt and every reply token but the last, which was never fed) and answers as a
    /// fresh run of its whole prompt; with cache_prompt false, or a prompt that differs early, it starts over.
    /// </summary>
    internal static void AssertPromptCacheReuse(ServeProcess server, string model, string kv, int ctx, string? key)
    {
        using var reference = new ServeReference(model, kv, ctx);
        var (status, first) = server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 12 }), key);
        Assert.Equal(200, status);
        string reply = first.GetProperty("choices")[0].GetProperty("text").GetString()!;
        var held = reference.Generate(Prompt, 12);
        Assert.Equal(held.Text, reply);
        var cacheHolds = held.PromptTokens.Concat(held.Tokens.Take(11)).ToList();

        string next = Prompt + reply + " The dog was happy.";
        var nextTokens = reference.Tokenizer.Encode(next, addBos: true);
        Assert.Equal(cacheHolds, nextTokens.Take(cacheHolds.Count)); // the text re-encodes to the ids the cache holds
        var expected = reference.Generate(next, 16);
        foreach (bool cachePrompt in new[] { true, false, true })
        {
            if (!cachePrompt)
            {
                // a prompt that differs in its first word: only BOS is common, and the cache keeps it (cut back exactly: FP32,
                // and K4V2, whose per-token groups quantize each position alone)
                var (_, other) = server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = "One day" + reply, max_tokens = 12 }), key);
                Assert.Equal(1, other.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
                Assert.Equal(reference.Generate("One day" + reply, 12).Text, other.GetProperty("choices")[0].GetProperty("text").GetString());
                server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 12 }), key);
            }

            var (nextStatus, body) = server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = next, max_tokens = 16, cache_prompt = cachePrompt }), key);
            Assert.Equal(200, nextStatus);
            Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
            Assert.Equal(cachePrompt ? cacheHolds.Count : 0, body.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
            Assert.Equal(nextTokens.Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(expected.Tokens.Count, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal(expected.KvBytes, body.GetProperty("kvaq").GetProperty("kv_bytes").GetInt64());

            // back to the state the next round expects: the first request's cache
            server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 12 }), key);
        }
    }

    [Fact]
    public void A_prompt_that_shares_only_a_prefix_keeps_that_prefix_and_answers_as_a_fresh_run()
    {
        // llama-server keeps a request's common prefix: the cache is cut back to it (exact for FP32) and only the rest runs.
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        const string First = "Once upon a time, there was a little dog named Max.";
        const string Second = "Once upon a time, there was a little cat named Tom.";
        var a = reference.Tokenizer.Encode(First, addBos: true);
        var b = reference.Tokenizer.Encode(Second, addBos: true);
        int common = a.Zip(b).TakeWhile(p => p.First == p.Second).Count();
        Assert.InRange(common, 5, b.Count - 2);

        var (status, _) = _server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = First, max_tokens = 8 }));
        Assert.Equal(200, status);
        var (status2, body) = _server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Second, max_tokens = 16 }));
        Assert.Equal(200, status2);
        Assert.Equal(common, body.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
        var expected = reference.Generate(Second, 16);
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(expected.KvBytes, body.GetProperty("kvaq").GetProperty("kv_bytes").GetInt64());
    }

    [Fact]
    public async Task Concurrent_requests_are_served_one_at_a_time_each_as_its_own_run()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        string[] prompts = ["Once upon a time", "The dog", "Lily and Tom", "One day", "Once upon a time there was"];
        var expected = prompts.Select(p => reference.Generate(p, 20).Text).ToList();
        var sent = prompts.Select(p => _server.Client.PostAsync("/v1/completions", new StringContent(JsonSerializer.Serialize(new { prompt = p, max_tokens = 20 })))).ToList();
        var responses = await Task.WhenAll(sent);
        for (int i = 0; i < prompts.Length; i++)
        {
            using var response = responses[i];
            Assert.Equal(200, (int)response.StatusCode);
            var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(expected[i], body.GetProperty("choices")[0].GetProperty("text").GetString());
        }
    }

    [Fact]
    public void A_text_response_format_and_no_tools_are_accepted()
    {
        var (status, body) = _server.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "response_format": {"type": "text"}, "tools": []}""");
        Assert.Equal(200, status);
        Assert.Equal(3, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public void Tokenize_and_detokenize_round_trip()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        const string text = "Once upon a time, there was a dog named Max.";
        var (status, body) = _server.Post("/tokenize", JsonSerializer.Serialize(new { content = text }));
        Assert.Equal(200, status);
        var tokens = body.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToList();
        Assert.Equal(reference.Tokenizer.Encode(text, addBos: false), tokens);

        var (_, withBos) = _server.Post("/tokenize", JsonSerializer.Serialize(new { content = text, add_special = true }));
        var bosTokens = withBos.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToList();
        Assert.Equal([1, .. tokens], bosTokens);

        var (dstatus, back) = _server.Post("/detokenize", JsonSerializer.Serialize(new { tokens = bosTokens }));
        Assert.Equal(200, dstatus);
        Assert.Equal(text, back.GetProperty("content").GetString());

        // with_pieces (llama-server's): each id with its text after the token before it (the pieces concatenate to the
        // text), or its byte values where they are part of a character (byte-fallback tokens of an emoji).
        const string emoji = "A fox \U0001F98A";
        var (_, pieces) = _server.Post("/tokenize", JsonSerializer.Serialize(new { content = emoji, add_special = true, with_pieces = true }));
        var entries = pieces.GetProperty("tokens").EnumerateArray().ToArray();
        Assert.Equal(reference.Tokenizer.Encode(emoji, addBos: true), entries.Select(e => e.GetProperty("id").GetInt32()));
        var bytes = new List<byte>();
        foreach (var e in entries)
        {
            var piece = e.GetProperty("piece");
            bytes.AddRange(piece.ValueKind == JsonValueKind.String
                ? System.Text.Encoding.UTF8.GetBytes(piece.GetString()!)
                : piece.EnumerateArray().Select(b => (byte)b.GetInt32()));
        }

        Assert.Equal(emoji, System.Text.Encoding.UTF8.GetString([.. bytes]));
        Assert.Contains(entries, e => e.GetProperty("piece").ValueKind == JsonValueKind.Array);
        Assert.Equal(string.Empty, entries[0].GetProperty("piece").GetString()); // BOS has no text
    }

    [Theory]
    [InlineData("/v1/completions", """{"prompt": "Hi", "temperature": -1}""", "temperature", "temperature must be a finite number >= 0, got -1")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function"}]}""", "tools", "tools[0].function is missing")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "tools": [{"type": "function"}]}""", "tools", "tools is for /v1/chat/completions; a completion of a prompt calls no tools")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "temperature": "hot"}""", "temperature", "temperature must be a number, got \"hot\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "max_tokens": 0}""", "max_tokens", "max_tokens must be an integer >= 1 (0 only with echo), got 0")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "max_tokens": 2.5}""", "max_tokens", "max_tokens must be an integer, got 2.5")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "top_p": 0}""", "top_p", "top_p must be in (0, 1], got 0")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "top_k": -3}""", "top_k", "top_k must be an integer >= 0 (0 = all tokens), got -3")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "seed": -1}""", "seed", "seed must be an integer >= 0, got -1")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "min_p": 1.5}""", "min_p", "min_p must be in [0, 1], got 1.5")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "repeat_penalty": 0}""", "repeat_penalty", "repeat_penalty must be a finite number > 0 (1 = off), got 0")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "repeat_last_n": -2}""", "repeat_last_n", "repeat_last_n must be an integer >= -1 (-1 = the whole sequence, 0 = off), got -2")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "presence_penalty": "high"}""", "presence_penalty", "presence_penalty must be a number, got \"high\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "frequency_penalty": 1e39}""", "frequency_penalty", "frequency_penalty must be a finite number, got 1e39")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": {"x": 1}}""", "logit_bias", "logit_bias: key \"x\" is not a token id")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": {"5": "a"}}""", "logit_bias", "logit_bias[\"5\"]: the bias must be a finite number (within float's range, +-3.4e38) or false (ban), got \"a\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": {"5": 1e308}}""", "logit_bias", "logit_bias[\"5\"]: the bias must be a finite number (within float's range, +-3.4e38) or false (ban), got 1e308")] // was a 500 (found by ServeRequestFuzzTests)
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": [[5, 3e38], [5, 3e38]]}""", "logit_bias", "logit_bias[1]: token 5's biases add up beyond float's range")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "\ud800"}""", null, "the request body's string at $.tool_choice escapes half of a UTF-16 surrogate pair")] // was a 500 (found by ServeRequestFuzzTests)
    [InlineData("/v1/completions", """{"prompt": "Hi", "stop": ["a\udc00b"]}""", null, "the request body's string at $.stop[0] escapes half of a UTF-16 surrogate pair")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": [[5]]}""", "logit_bias", "logit_bias[0] must be a pair [token id, bias], got [5]")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "logit_bias": 3}""", "logit_bias", "logit_bias must be an object of token id -> bias, got 3")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"9999": 1}}""", "logit_bias", "logit_bias: token 9999 is not a token id of this model (its vocabulary has 512)")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "n": 0}""", "n", "n must be an integer in 1..128 (choices generated one after another), got 0")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "n": 129}""", "n", "n must be an integer in 1..128 (choices generated one after another), got 129")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "n": "2"}""", "n", "n must be an integer in 1..128 (choices generated one after another), got \"2\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "stop": 5}""", "stop", "stop must be a string or an array of strings, got 5")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "stop": ["x", ""]}""", "stop", "stop[1]: an empty text would end every reply at once")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "stream": "yes"}""", "stream", "stream must be true or false, got \"yes\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", "cache_prompt": 1}""", "cache_prompt", "cache_prompt must be true or false, got 1")]
    [InlineData("/v1/completions", """{"max_tokens": 4}""", "prompt", "prompt is required (a string, or an array of token ids)")]
    [InlineData("/v1/completions", """{"prompt": {"text": "Hi"}}""", "prompt", "prompt must be a string or an array of token ids, got an object")]
    [InlineData("/v1/chat/completions", """{"messages": []}""", "messages", "messages is empty; a chat completion needs at least one message")]
    [InlineData("/v1/chat/completions", """{"prompt": "Hi"}""", "messages", "messages is required")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}""", "messages", "messages[1].role: unknown role 'bot'; expected system, user, assistant or tool")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user"}]}""", "messages", "messages[0].content is required")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}""", "messages", "messages[0].content[0]: only text parts")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": -2}""", "max_completion_tokens", "max_completion_tokens must be an integer >= 1, got -2")]
    [InlineData("/tokenize", """{"text": "Hi"}""", "content", "content is required (the text to tokenize)")]
    [InlineData("/detokenize", """{"tokens": [1, 99999]}""", "tokens", "tokens[1]: 99999 is not a token id (0..511)")]
    [InlineData("/detokenize", """{"tokens": "1 2"}""", "tokens", "tokens must be an array of token ids, got \"1 2\"")]
    [InlineData("/v1/completions", """{"prompt": "Hi", """, null, "the request body is not valid JSON: ")]
    [InlineData("/v1/completions", "", null, "the request body is not valid JSON: ")]
    [InlineData("/v1/completions", """["Hi"]""", null, "the request body must be a JSON object, got array")]
    public void Bad_requests_are_400_in_openai_shape_naming_the_field_and_value(string path, string json, string? param, string message)
    {
        var (status, body) = _server.Post(path, json);
        Assert.Equal(400, status);
        var error = body.GetProperty("error");
        Assert.Contains(message, error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(400, error.GetProperty("code").GetInt32());
    }

    [Fact]
    public void A_prompt_longer_than_the_context_is_400_naming_its_tokens_and_the_context()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 10));
        int count = reference.Tokenizer.Encode(prompt, addBos: true).Count;
        Assert.True(count > Stories260KServer.Ctx);
        var (status, body) = _server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt }));
        Assert.Equal(400, status);
        Assert.Equal($"the prompt has {count} tokens (BOS included) but the context holds {Stories260KServer.Ctx} (kvaq serve --ctx)", body.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal("prompt", body.GetProperty("error").GetProperty("param").GetString());

        (status, body) = _server.Post("/v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = prompt } } }));
        Assert.Equal(400, status);
        Assert.Equal($"the conversation has {count} tokens (BOS included) but the context holds {Stories260KServer.Ctx} (kvaq serve --ctx)", body.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal("messages", body.GetProperty("error").GetProperty("param").GetString());
    }

    [Fact]
    public void Health_and_models_answer_and_unknown_paths_and_methods_are_404_and_405_in_openai_shape()
    {
        var (status, health) = _server.Get("/health");
        Assert.Equal(200, status);
        Assert.Equal("ok", health.GetProperty("status").GetString());

        (status, var list) = _server.Get("/v1/models");
        Assert.Equal(200, status);
        Assert.Equal("list", list.GetProperty("object").GetString());
        var model = Assert.Single(list.GetProperty("data").EnumerateArray());
        Assert.Equal("stories260K.bin", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal(Stories260KServer.Ctx, model.GetProperty("meta").GetProperty("ctx").GetInt32());
        Assert.Equal("cpu", model.GetProperty("meta").GetProperty("device").GetString());

        (status, var missing) = _server.Get("/v1/audio/speech");
        Assert.Equal(404, status);
        Assert.Contains("no endpoint /v1/audio/speech", missing.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("not_found_error", missing.GetProperty("error").GetProperty("type").GetString());

        (status, var wrongMethod) = _server.Get("/v1/completions");
        Assert.Equal(405, status);
        Assert.Equal("GET is not allowed on /v1/completions", wrongMethod.GetProperty("error").GetProperty("message").GetString());
    }

    private static void AssertUsage(JsonElement body, int prompt, int completion)
    {
        var usage = body.GetProperty("usage");
        Assert.Equal(prompt, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(completion, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(prompt + completion, usage.GetProperty("total_tokens").GetInt32());
    }
}
