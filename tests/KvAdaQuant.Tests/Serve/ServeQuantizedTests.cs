using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve</c> on stories3M-q80 with a K4V2 cache and <c>--api-key</c>: completions equal the library's and
/// <c>kvaq generate</c>'s on the same cache, the key is enforced, and a client that leaves mid-stream cancels its generation.
/// </summary>
public partial class ServeQuantizedTests(Stories3MK4V2Server fixture) : IClassFixture<Stories3MK4V2Server>
{
    private const string Prompt = "Once upon a time";
    private const string Key = Stories3MK4V2Server.Key;
    private readonly ServeProcess _server = fixture.Server;

    [Fact]
    public void Greedy_completion_with_k4v2_equals_the_generator_and_kvaq_generate()
    {
        using var reference = new ServeReference("stories3M-q80", "k4v2", Stories3MK4V2Server.Ctx);
        var expected = reference.Generate(Prompt, 32);
        Assert.Equal("max_tokens", expected.StopReason);
        var (status, body) = _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 32}""", Key);
        Assert.Equal(200, status);
        string text = body.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(expected.Text, text);
        Assert.Equal(32, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(expected.PromptTokens.Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal("k4v2", body.GetProperty("kvaq").GetProperty("kv").GetString());
        Assert.Equal(expected.KvBytes, body.GetProperty("kvaq").GetProperty("kv_bytes").GetInt64());

        var (rc, stdout, stderr) = KvaqProcess.Run("generate", "-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "512", "--threads", "1", "-p", Prompt, "-n", "32", "--json");
        Assert.True(rc == 0, stderr);
        Assert.Equal(text, JsonDocument.Parse(stdout).RootElement.GetProperty("text").GetString());

        // The fp32 reference differs: the K4V2 cache is what the server ran.
        using var fp32 = new ServeReference("stories3M-q80", "fp32", Stories3MK4V2Server.Ctx);
        Assert.NotEqual(fp32.Generate(Prompt, 32).KvBytes, body.GetProperty("kvaq").GetProperty("kv_bytes").GetInt64());
    }

    [Fact]
    public void A_prompt_that_extends_the_previous_request_reuses_its_k4v2_cache_with_the_fresh_result() =>
        ServeCompletionTests.AssertPromptCacheReuse(_server, "stories3M-q80", "k4v2", Stories3MK4V2Server.Ctx, Key);

    [Fact]
    public void The_api_key_is_required_except_for_health_and_models()
    {
        const string request = """{"prompt": "Once upon a time", "max_tokens": 4}""";
        var (status, body) = _server.Post("/v1/completions", request);
        Assert.Equal(401, status);
        Assert.Equal("authentication_error", body.GetProperty("error").GetProperty("type").GetString());
        Assert.Contains("no API key", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);

        (status, body) = _server.Post("/v1/completions", request, "sk-wrong");
        Assert.Equal(401, status);
        Assert.Equal("invalid API key", body.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal(401, _server.Post("/tokenize", """{"content": "Hi"}""").Status);
        Assert.Equal(401, _server.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}]}""", Key + "x").Status);

        Assert.Equal(200, _server.Post("/v1/completions", request, Key).Status);
        Assert.Equal(200, _server.Post("/tokenize", """{"content": "Hi"}""", Key).Status);
        using var withHeader = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(request, Encoding.UTF8, "application/json") };
        withHeader.Headers.Add("X-Api-Key", Key);
        using (var response = _server.Client.Send(withHeader))
        {
            Assert.Equal(200, (int)response.StatusCode);
        }

        Assert.Equal(200, _server.Get("/health").Status);
        Assert.Equal(200, _server.Get("/v1/models").Status);
    }

    [Fact]
    public async Task A_client_that_leaves_mid_stream_cancels_its_generation()
    {
        // The request asks for 480 tokens; the client reads the first event and closes the connection. A story can still
        // end (EOS) before the server notices: only then is it tried again, with another seed, three times at most.
        var outcomes = new List<string>();
        for (int seed = 1; seed <= 3; seed++)
        {
            int before = Requests(_server.Stderr).Count;
            // No draining of the rest on dispose (SocketsHttpHandler would read up to 1 MB to reuse the connection): closing
            // the response closes the connection.
            using (var client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = new Uri(_server.Url) })
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = new StringContent($$"""{"prompt": "Once upon a time", "max_tokens": 480, "temperature": 1, "seed": {{seed}}, "stream": true}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Key);
                using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);
            }

            string line = await NextRequestLine(before);
            var match = Generated().Match(line);
            Assert.True(match.Success, line);
            if (match.Groups[2].Value == "cancelled")
            {
                Assert.True(int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) < 480, line);
                // The queue is free again: the next request is served.
                Assert.Equal(200, _server.Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 4}""", Key).Status);
                return;
            }

            outcomes.Add(line);
        }

        Assert.Fail($"no generation was cancelled: {string.Join(" | ", outcomes)}");
    }

    private async Task<string> NextRequestLine(int before)
    {
        for (int i = 0; i < 200; i++)
        {
            var lines = Requests(_server.Stderr);
            if (lines.Count > before)
            {
                return lines[before];
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"the server logged no line for the request: {_server.Stderr}");
    }

    private static List<string> Requests(string log) =>
        log.Split('\n').Where(l => l.StartsWith("[POST /v1/completions ", StringComparison.Ordinal)).ToList();

    [GeneratedRegex(@"prompt tokens \(\d+ from the cache\), (\d+) generated \((\w+)\)")]
    private static partial Regex Generated();
}
