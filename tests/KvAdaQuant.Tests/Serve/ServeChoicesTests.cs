using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c> with <c>n</c> &gt; 1: the choices run one after another, choice i sampled with the request's seed + i
/// (so choice 0 is the request with n 1); usage counts the prompt once and every choice's tokens; streamed, each choice's
/// chunks carry its index and concatenate to its whole text, each ends with one finish chunk, the last with the usage.
/// </summary>
public class ServeChoicesTests(Stories260KServer fixture) : IClassFixture<Stories260KServer>
{
    private const string Prompt = "Once upon a time";
    private readonly ServeProcess _server = fixture.Server;

    [Fact]
    public void Each_choice_equals_the_sampler_with_the_seed_plus_its_index()
    {
        using var reference = new ServeReference("stories260K", "fp32", Stories260KServer.Ctx);
        var expected = Enumerable.Range(0, 3).Select(i => reference.Generate(Prompt, 16, new Sampler(0.9f, 40, 1f, (ulong)(7 + i)))).ToArray();
        Assert.True(expected.Select(e => e.Text).Distinct().Count() > 1, "the seeds should give different texts");

        var (status, body) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.9, "top_k": 40, "seed": 7, "n": 3, "logprobs": 1}""");
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices").EnumerateArray().ToArray();
        Assert.Equal(3, choices.Length);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
            Assert.Equal(expected[i].Text, choices[i].GetProperty("text").GetString());
            Assert.Equal(expected[i].Tokens.Count, choices[i].GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        }

        var usage = body.GetProperty("usage");
        Assert.Equal(expected[0].PromptTokens.Count, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.Sum(e => e.Tokens.Count), usage.GetProperty("completion_tokens").GetInt32());

        // Choice 0 is the same request with n 1.
        var (_, one) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.9, "top_k": 40, "seed": 7}""");
        Assert.Equal(choices[0].GetProperty("text").GetString(), one.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Theory]
    [InlineData("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.9, "seed": 3, "n": 3}""")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 12, "temperature": 0.9, "seed": 3, "n": 2}""")]
    public void Streamed_choices_carry_their_index_and_concatenate_to_the_whole_ones(string path, string request)
    {
        bool chat = path.Contains("chat", StringComparison.Ordinal);
        var (_, whole) = _server.Post(path, request);
        var texts = whole.GetProperty("choices").EnumerateArray()
            .Select(c => chat ? c.GetProperty("message").GetProperty("content").GetString()! : c.GetProperty("text").GetString()!).ToArray();
        var (status, events) = _server.PostStream(path, request[..^1] + ", \"stream\": true}");
        Assert.Equal(200, status);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        var streamed = new string[texts.Length];
        var finishes = new int[texts.Length];
        foreach (var chunk in chunks)
        {
            var choice = Assert.Single(chunk.GetProperty("choices").EnumerateArray());
            int i = choice.GetProperty("index").GetInt32();
            string? piece = chat
                ? choice.GetProperty("delta").TryGetProperty("content", out var d) ? d.GetString() : null
                : choice.GetProperty("text").GetString();
            streamed[i] += piece;
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
            {
                finishes[i]++;
            }
        }

        Assert.Equal(texts, streamed.Select(t => t ?? string.Empty));
        Assert.All(finishes, f => Assert.Equal(1, f));
        Assert.True(chunks[^1].TryGetProperty("usage", out var usage));
        Assert.Equal(whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(texts.Length - 1, chunks[^1].GetProperty("choices")[0].GetProperty("index").GetInt32());
        Assert.All(chunks[..^1], c => Assert.False(c.TryGetProperty("usage", out _)));
    }
}
