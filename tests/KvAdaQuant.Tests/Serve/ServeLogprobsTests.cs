using System.Globalization;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c> log-probabilities: completions' <c>logprobs</c> (with <c>echo</c>, token-id prompts and
/// <c>max_tokens</c> 0, the way lm-evaluation-harness scores continuations) and chat's <c>logprobs</c> /
/// <c>top_logprobs</c> equal the library's <see cref="LogprobOptions"/> runs; streamed chunks carry exactly the whole
/// response's entries; a token is listed only where some of its text is returned (a stop text cuts the rest); bad values are refused naming the field.
/// </summary>
public class ServeLogprobsTests(Stories260KServer fixture) : IClassFixture<Stories260KServer>
{
    private const string Prompt = "Once upon a time";
    private readonly ServeProcess _server = fixture.Server;

    private static float?[] Floats(JsonElement array) =>
        [.. array.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Null ? (float?)null : e.GetSingle())];

    private static string[] Strings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    private static int[] Ints(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetInt32())];

    [Fact]
    public void Completion_logprobs_equal_the_generators_and_offsets_count_from_the_prompts_start()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var tok = reference.Tokenizer;
        var promptTokens = tok.Encode(Prompt, addBos: true);
        var expected = new Generator(reference.Session, tok).Generate(promptTokens, 0, 20, new Sampler(0.8f, 0, 1f, 5), logprobs: new LogprobOptions(3)).Logprobs!;

        var (status, body) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.8, "seed": 5, "logprobs": 3}""");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        string text = choice.GetProperty("text").GetString()!;
        var lp = choice.GetProperty("logprobs");
        var tokens = Strings(lp.GetProperty("tokens"));
        Assert.Equal(20, tokens.Length);
        Assert.Equal(text, string.Concat(tokens));
        Assert.Equal(expected.Select(e => (float?)e.Logprob), Floats(lp.GetProperty("token_logprobs")));
        var tops = lp.GetProperty("top_logprobs").EnumerateArray().ToArray();
        int prev = promptTokens[^1];
        for (int i = 0; i < 20; i++)
        {
            var top = tops[i].EnumerateObject().ToArray();
            var want = expected[i].Top.Select(t => (Encoding.UTF8.GetString(tok.DecodeBytes(prev, t.Token)), t.Logprob)).DistinctBy(t => t.Item1).ToArray();
            Assert.Equal(want.Select(w => w.Item1), top.Select(p => p.Name));
            Assert.Equal(want.Select(w => w.Logprob), top.Select(p => p.Value.GetSingle()));
            prev = expected[i].Token;
        }

        // OpenAI's text_offset: where each token's text starts, counted from the start of the prompt.
        var offsets = Ints(lp.GetProperty("text_offset"));
        int at = Prompt.Length;
        for (int i = 0; i < tokens.Length; i++)
        {
            Assert.Equal(at, offsets[i]);
            at += tokens[i].Length;
        }
    }

    [Fact]
    public void Echo_with_max_tokens_0_scores_the_prompt_as_the_library_does()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var tok = reference.Tokenizer;
        const string text = "Once upon a time, there was a little dog.";
        var ids = tok.Encode(text, addBos: true);
        var scored = new Generator(reference.Session, tok).Generate(ids, 0, 0, new Sampler(), logprobs: new LogprobOptions(1) { Prompt = true }).PromptLogprobs!;

        // A text prompt: the text back, one entry per token after the BOS kvaq added, each conditioned on all before it.
        var (status, body) = _server.Post("/v1/completions", $$"""{"prompt": "{{text}}", "max_tokens": 0, "echo": true, "logprobs": 1}""");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(text, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        var lp = choice.GetProperty("logprobs");
        Assert.Equal(text, string.Concat(Strings(lp.GetProperty("tokens"))));
        Assert.Equal(scored.Select(e => (float?)e.Logprob), Floats(lp.GetProperty("token_logprobs")));
        Assert.Equal(0, Ints(lp.GetProperty("text_offset"))[0]);
        Assert.Equal(0, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // lm-evaluation-harness's request: token ids in a one-prompt array (used as given), echo, one generated token; the first id has no
        // log-probability, the continuation's sum is the log-likelihood and the generated token comes last.
        string idList = string.Join(", ", ids);
        (status, body) = _server.Post("/v1/completions", $$"""{"prompt": [[{{idList}}]], "max_tokens": 1, "temperature": 0, "echo": true, "logprobs": 1}""");
        Assert.Equal(200, status);
        lp = body.GetProperty("choices")[0].GetProperty("logprobs");
        var logprobs = Floats(lp.GetProperty("token_logprobs"));
        Assert.Equal(ids.Count + 1, logprobs.Length);
        Assert.Null(logprobs[0]);
        Assert.Equal(JsonValueKind.Null, lp.GetProperty("top_logprobs")[0].ValueKind);
        Assert.Equal(scored.Select(e => (float?)e.Logprob), logprobs[1..^1]);
        var greedy = new Generator(reference.Session, tok).Generate(ids, 0, 1, new Sampler(), logprobs: new LogprobOptions(1)).Logprobs!;
        Assert.Equal(greedy[0].Logprob, logprobs[^1]);

        // Echo without logprobs: the prompt and the completion, no entries.
        (_, body) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 4, "echo": true}""");
        choice = body.GetProperty("choices")[0];
        Assert.Equal(Prompt + reference.Generate(Prompt, 4).Text, choice.GetProperty("text").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
    }

    [Theory]
    [InlineData("""{"prompt": "Once upon a time", "max_tokens": 24, "logprobs": 2}""")]
    [InlineData("""{"prompt": "Once upon a time", "max_tokens": 24, "logprobs": 2, "echo": true}""")]
    [InlineData("""{"prompt": "Once upon a time", "max_tokens": 40, "logprobs": 0, "stop": ["Lily", "park"]}""")]
    public void Streamed_chunks_carry_exactly_the_whole_responses_entries(string request)
    {
        var (_, whole) = _server.Post("/v1/completions", request);
        var choice = whole.GetProperty("choices")[0];
        var lp = choice.GetProperty("logprobs");
        var (status, events) = _server.PostStream("/v1/completions", request.Replace("}", ", \"stream\": true}", StringComparison.Ordinal));
        Assert.Equal(200, status);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
        var withEntries = chunks.Where(c => c.GetProperty("logprobs").ValueKind == JsonValueKind.Object).Select(c => c.GetProperty("logprobs")).ToList();
        Assert.Equal(Strings(lp.GetProperty("tokens")), withEntries.SelectMany(c => Strings(c.GetProperty("tokens"))));
        Assert.Equal(Floats(lp.GetProperty("token_logprobs")), withEntries.SelectMany(c => Floats(c.GetProperty("token_logprobs"))));
        Assert.Equal(Ints(lp.GetProperty("text_offset")), withEntries.SelectMany(c => Ints(c.GetProperty("text_offset"))));
        Assert.Equal(choice.GetProperty("text").GetString(), string.Concat(chunks.Select(c => c.GetProperty("text").GetString())));

        // Each token's text starts inside the text returned; a stop text's cut drops the tokens after it.
        string text = choice.GetProperty("text").GetString()!;
        Assert.All(Ints(lp.GetProperty("text_offset")), o => Assert.True(o < text.Length + Prompt.Length));
        if (request.Contains("stop", StringComparison.Ordinal))
        {
            Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
            int generated = whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
            var listed = Strings(lp.GetProperty("tokens"));
            Assert.True(listed.Length <= generated);
            Assert.StartsWith(text, string.Concat(listed), StringComparison.Ordinal); // the listed tokens cover the text returned
            Assert.True(string.Concat(listed[..^1]).Length < text.Length, "a token listed only where some of its text is returned");
        }
    }

    [Fact]
    public void Chat_logprobs_equal_the_request_generators_whole_and_streamed()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var reply = reference.ChatReply(ChatTemplate.None, "Once upon a time,", " there was a dog", 12);
        var expected = new RequestGenerator(reference.Session, reference.Tokenizer).Generate(reply.PromptTokens, 12, new Sampler(), null, logprobs: new LogprobOptions(2)).Logprobs!;
        const string request = """{"messages": [{"role": "system", "content": "Once upon a time,"}, {"role": "user", "content": " there was a dog"}], "max_tokens": 12, "logprobs": true, "top_logprobs": 2}""";
        var (status, body) = _server.Post("/v1/chat/completions", request);
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        var content = choice.GetProperty("logprobs").GetProperty("content").EnumerateArray().ToArray();
        Assert.Equal(reply.Tokens.Count, content.Length);
        Assert.Equal(expected.Select(e => e.Logprob), content.Select(c => c.GetProperty("logprob").GetSingle()));
        Assert.Equal(expected.Select(e => e.Top.Select(t => t.Logprob)), content.Select(c => c.GetProperty("top_logprobs").EnumerateArray().Select(t => t.GetProperty("logprob").GetSingle())));
        var bytes = content.SelectMany(c => c.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32())).ToArray();
        Assert.Equal(choice.GetProperty("message").GetProperty("content").GetString(), Encoding.UTF8.GetString(bytes));

        var (_, events) = _server.PostStream("/v1/chat/completions", request.Replace("\"max_tokens\"", "\"stream\": true, \"max_tokens\"", StringComparison.Ordinal));
        var streamed = events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0])
            .Where(c => c.TryGetProperty("logprobs", out var l) && l.ValueKind == JsonValueKind.Object)
            .SelectMany(c => c.GetProperty("logprobs").GetProperty("content").EnumerateArray())
            .Select(c => c.GetProperty("logprob").GetSingle());
        Assert.Equal(expected.Select(e => e.Logprob), streamed);

        // Without the field: logprobs null, as OpenAI writes it.
        (_, body) = _server.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}""");
        Assert.Equal(JsonValueKind.Null, body.GetProperty("choices")[0].GetProperty("logprobs").ValueKind);
    }

    [Theory]
    [InlineData("/v1/completions", """{"prompt": "x", "logprobs": 21}""", "logprobs", "logprobs must be an integer in 0..20 (the most likely tokens listed per position), got 21")]
    [InlineData("/v1/completions", """{"prompt": "x", "logprobs": -1}""", "logprobs", "logprobs must be an integer in 0..20 (the most likely tokens listed per position), got -1")]
    [InlineData("/v1/completions", """{"prompt": "x", "logprobs": true}""", "logprobs", "logprobs must be an integer in 0..20 (the most likely tokens listed per position), got true")]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 0}""", "max_tokens", "max_tokens must be an integer >= 1 (0 only with echo), got 0")]
    [InlineData("/v1/completions", """{"prompt": "x", "echo": "yes"}""", "echo", "echo must be true or false, got \"yes\"")]
    [InlineData("/v1/completions", """{"prompt": [1, 99999]}""", "prompt", "prompt[1] = 99999 is not a token id of this model (its vocabulary has 512)")]
    [InlineData("/v1/completions", """{"prompt": [1, -3]}""", "prompt", "prompt[1] must be a token id (an integer >= 0), got -3")]
    [InlineData("/v1/completions", """{"prompt": []}""", "prompt", "prompt is an empty array of token ids")]
    [InlineData("/v1/completions", """{"prompt": ["a", 3]}""", "prompt", "prompt[1] must be a string or an array of token ids, got 3")]
    [InlineData("/v1/completions", """{"prompt": [[1, 2], [1, 99999]]}""", "prompt", "prompt[1][1] = 99999 is not a token id of this model (its vocabulary has 512)")]
    [InlineData("/v1/completions", """{"prompt": [[1, 2], []]}""", "prompt", "prompt[1] is an empty array of token ids")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}""", "top_logprobs", "top_logprobs needs \"logprobs\": true")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 30}""", "top_logprobs", "top_logprobs must be an integer in 0..20 (the most likely tokens listed per position), got 30")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "logprobs": 1}""", "logprobs", "logprobs must be true or false, got 1")]
    public void Bad_values_are_refused_naming_the_field(string path, string request, string param, string message)
    {
        var (status, body) = _server.Post(path, request);
        Assert.Equal(400, status);
        var error = body.GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(message, error.GetProperty("message").GetString());
    }

    [Fact]
    public void A_batch_of_token_id_prompts_scores_each_as_its_own_request()
    {
        // lm-evaluation-harness's local-completions with a batch size above 1: several token-id prompts in one request,
        // echo, logprobs 1, max_tokens 0 (or 1). Choice i is prompt i, entry for entry what it gets alone.
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        string[] texts = ["Once upon a time, there was a little dog.", "Once upon a time, there was a cat.", "The sun was hot."];
        var lists = texts.Select(t => string.Join(", ", reference.Tokenizer.Encode(t, addBos: true))).ToArray();
        foreach (int maxTokens in new[] { 0, 1 })
        {
            var (status, batch) = _server.Post("/v1/completions", $$"""{"prompt": [[{{lists[0]}}], [{{lists[1]}}], [{{lists[2]}}]], "max_tokens": {{maxTokens}}, "temperature": 0, "echo": true, "logprobs": 1}""");
            Assert.Equal(200, status);
            var choices = batch.GetProperty("choices").EnumerateArray().ToArray();
            Assert.Equal(3, choices.Length);
            int promptTokens = 0;
            for (int i = 0; i < 3; i++)
            {
                var (_, alone) = _server.Post("/v1/completions", $$"""{"prompt": [[{{lists[i]}}]], "max_tokens": {{maxTokens}}, "temperature": 0, "echo": true, "logprobs": 1}""");
                var one = alone.GetProperty("choices")[0];
                Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
                Assert.Equal(one.GetProperty("text").GetString(), choices[i].GetProperty("text").GetString());
                Assert.Equal(one.GetProperty("logprobs").GetRawText(), choices[i].GetProperty("logprobs").GetRawText());
                promptTokens += alone.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
            }

            Assert.Equal(promptTokens, batch.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(3 * maxTokens, batch.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }
    }

    [Fact]
    public void A_prompt_of_one_text_or_one_id_list_in_an_array_is_one_prompt()
    {
        var (_, plain) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 6}""");
        var (_, wrapped) = _server.Post("/v1/completions", """{"prompt": ["Once upon a time"], "max_tokens": 6}""");
        string text = plain.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(text, wrapped.GetProperty("choices")[0].GetProperty("text").GetString());
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        string ids = string.Join(",", reference.Tokenizer.Encode(Prompt, addBos: true).Select(i => i.ToString(CultureInfo.InvariantCulture)));
        var (_, byIds) = _server.Post("/v1/completions", $$"""{"prompt": [{{ids}}], "max_tokens": 6}""");
        Assert.Equal(text, byIds.GetProperty("choices")[0].GetProperty("text").GetString());
    }
}
