using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve --parallel N</c>: N requests generate at once, each in its own cache, their decode steps in one forward
/// pass; each answer is the one the request gets alone (sampled or greedy, streamed or not), and the option's bad values
/// are errors naming it.
/// </summary>
public class ServeParallelTests
{
    private static readonly string[] Prompts = ["Once upon a time", "The little dog", "Lily and Tom went to the park and", "One day"];

    [Fact]
    public void Concurrent_requests_each_get_what_they_get_alone()
    {
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        var expected = Prompts.Select((p, i) => reference.Generate(p, 24, new Sampler(i % 2 == 0 ? 0f : 0.8f, 40, 1f, (ulong)(11 + i)))).ToArray();

        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "3");
        Assert.Contains("128 positions per request; 3 requests at once, their decode steps batched", server.Stderr);
        var texts = new string?[Prompts.Length];
        var statuses = new int[Prompts.Length];
        var threads = Prompts.Select((p, i) => new Thread(() =>
        {
            string temperature = i % 2 == 0 ? "0" : "0.8";
            var (status, body) = server.Post("/v1/completions", $$"""{"prompt": "{{p}}", "max_tokens": 24, "temperature": {{temperature}}, "top_k": 40, "seed": {{11 + i}}}""");
            statuses[i] = status;
            texts[i] = status == 200 ? body.GetProperty("choices")[0].GetProperty("text").GetString() : body.ToString();
        })).ToArray();
        foreach (var t in threads)
        {
            t.Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        for (int i = 0; i < Prompts.Length; i++)
        {
            Assert.True(statuses[i] == 200, $"request {i}: {statuses[i]} {texts[i]}");
            Assert.Equal(expected[i].Text, texts[i]);
        }

        // A later request reuses the slot whose cache holds its prompt, and answers the same again.
        var (again, repeat) = server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "seed": 11}""");
        Assert.Equal(200, again);
        Assert.Equal(expected[0].Text, repeat.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Theory]
    [InlineData("0", null, "--parallel must be at least 1, got 0")]
    [InlineData("2", "cuda", "--parallel 2 decodes several requests in one forward pass of the CPU engine; with --device cuda requests run one at a time")]
    public void Bad_values_are_errors_naming_the_option(string value, string? device, string message)
    {
        string[] args = device is null ? ["serve", "-m", "stories260K", "--port", "0", "--parallel", value] : ["serve", "-m", "stories260K", "--port", "0", "--parallel", value, "--device", device];
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run(args);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {message}", stderr.Trim());
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }
}
