using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories3M-q80 (k4v2, 128 positions, two slots, defaults temperature 0.5 and 12 tokens).</summary>
public sealed class Stories3MNativeServer : IDisposable
{
    public ServeProcess Server { get; } = new("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "2", "--temperature", "0.5", "-n", "12", "--alias", "tiny-stories");

    internal ServeReference Reference { get; } = new("stories3M-q80", "k4v2", 128);

    public void Dispose()
    {
        Server.Dispose();
        Reference.Dispose();
    }
}

/// <summary>
/// llama-server's own <c>POST /completion</c> (and <c>/completions</c>) and <c>GET /props</c>: the text is what
/// <c>kvaq generate</c> gives for the same prompt and sampler, whole or streamed, in llama-server's fields
/// (<c>content</c>, <c>stop</c>, <c>stop_type</c>, <c>stopping_word</c>, <c>tokens_predicted</c>, <c>timings</c>, ...);
/// <c>n_predict</c> and <c>id_slot</c> do what they do there; bad fields are refused naming them.
/// </summary>
public class ServeNativeCompletionTests(Stories3MNativeServer fixture) : IClassFixture<Stories3MNativeServer>
{
    private const string Prompt = "Once upon a time";
    private readonly ServeProcess _server = fixture.Server;
    private readonly ServeReference _reference = fixture.Reference;

    [Theory]
    [InlineData("/completion")]
    [InlineData("/completions")]
    public void A_completion_is_what_generate_gives_in_llama_servers_fields(string path)
    {
        var expected = _reference.Generate(Prompt, 16);
        var (status, body) = _server.Post(path, $$"""{"prompt": "{{Prompt}}", "n_predict": 16, "temperature": 0}""");
        Assert.Equal(200, status);
        Assert.Equal(expected.Text, body.GetProperty("content").GetString());
        Assert.True(body.GetProperty("stop").GetBoolean());
        Assert.Equal("limit", body.GetProperty("stop_type").GetString());
        Assert.Equal(string.Empty, body.GetProperty("stopping_word").GetString());
        Assert.Equal(16, body.GetProperty("tokens_predicted").GetInt32());
        Assert.Equal(expected.PromptTokens.Count, body.GetProperty("tokens_evaluated").GetInt32());
        Assert.Equal(Prompt, body.GetProperty("prompt").GetString());
        Assert.False(body.GetProperty("truncated").GetBoolean());
        Assert.Equal("tiny-stories", body.GetProperty("model").GetString()); // --alias
        Assert.Equal("tiny-stories", _server.Get("/v1/models").Body.GetProperty("data")[0].GetProperty("id").GetString());
        int slot = body.GetProperty("id_slot").GetInt32();
        Assert.Equal(expected.PromptTokens.Count + 15, body.GetProperty("tokens_cached").GetInt32()); // the last token sampled is not fed
        Assert.Equal(_server.Get("/slots").Body[slot].GetProperty("cache_tokens").GetInt32(), body.GetProperty("tokens_cached").GetInt32());
        var settings = body.GetProperty("generation_settings");
        Assert.Equal(128, settings.GetProperty("n_ctx").GetInt32());
        Assert.Equal(16, settings.GetProperty("n_predict").GetInt32());
        Assert.Equal(0f, settings.GetProperty("temperature").GetSingle());
        var timings = body.GetProperty("timings");
        int run = timings.GetProperty("prompt_n").GetInt32();
        Assert.Equal(expected.PromptTokens.Count - body.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32(), run);
        Assert.Equal(16, timings.GetProperty("predicted_n").GetInt32());
        Assert.True(timings.GetProperty("predicted_ms").GetDouble() > 0);
        double perToken = timings.GetProperty("predicted_per_token_ms").GetDouble();
        Assert.Equal(timings.GetProperty("predicted_ms").GetDouble() / 16, perToken, 1e-9);
        Assert.Equal(1000 / perToken, timings.GetProperty("predicted_per_second").GetDouble(), 1e-6);
        Assert.Equal("k4v2", body.GetProperty("kvaq").GetProperty("kv").GetString());
    }

    [Fact]
    public void A_sampled_completion_streams_the_same_text_and_ends_with_the_whole_answer()
    {
        var expected = _reference.Generate(Prompt, 20, new Sampler(0.9f, 40, 1f, 7));
        var (status, events) = PostStream("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": 20, "temperature": 0.9, "top_k": 40, "seed": 7, "stream": true}""");
        Assert.Equal(200, status);
        Assert.True(events.Count >= 2);
        var text = new StringBuilder();
        foreach (var e in events.Take(events.Count - 1))
        {
            Assert.False(e.GetProperty("stop").GetBoolean());
            text.Append(e.GetProperty("content").GetString());
        }

        Assert.Equal(expected.Text, text.ToString());
        var last = events[^1];
        Assert.True(last.GetProperty("stop").GetBoolean());
        Assert.Equal(string.Empty, last.GetProperty("content").GetString());
        Assert.Equal(expected.Tokens.Count, last.GetProperty("tokens_predicted").GetInt32());
        Assert.True(last.GetProperty("generation_settings").GetProperty("stream").GetBoolean());

        // Not streamed: the same text.
        var (_, whole) = _server.Post("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": 20, "temperature": 0.9, "top_k": 40, "seed": 7}""");
        Assert.Equal(expected.Text, whole.GetProperty("content").GetString());
    }

    [Fact]
    public void A_stop_text_ends_the_content_and_is_named()
    {
        var expected = _reference.Generate(Prompt, 40);
        int at = expected.Text.IndexOf("Lily", StringComparison.Ordinal);
        Assert.True(at > 0, expected.Text);
        var (_, body) = _server.Post("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": 40, "temperature": 0, "stop": ["nothing like this", "Lily"]}""");
        Assert.Equal(expected.Text[..at], body.GetProperty("content").GetString());
        Assert.Equal("word", body.GetProperty("stop_type").GetString());
        Assert.Equal("Lily", body.GetProperty("stopping_word").GetString());
    }

    [Fact]
    public void N_predict_minus_one_runs_to_the_end_and_the_defaults_apply_where_fields_are_left_out()
    {
        var full = _reference.Generate(Prompt, 128);
        var (_, body) = _server.Post("/completion", $$"""{"prompt": "{{Prompt}}", "n_predict": -1, "temperature": 0}""");
        Assert.Equal(full.Text, body.GetProperty("content").GetString());
        Assert.Equal(full.StopReason == "eos" ? "eos" : "limit", body.GetProperty("stop_type").GetString());
        Assert.Equal(-1, body.GetProperty("generation_settings").GetProperty("n_predict").GetInt32());

        // Without n_predict the server's -n 12 applies; temperature 0.5 and seed 42 from its command line.
        var sampled = _reference.Generate(Prompt, 12, new Sampler(0.5f, 0, 1f, 42));
        var (_, defaults) = _server.Post("/completion", $$"""{"prompt": "{{Prompt}}"}""");
        Assert.Equal(sampled.Text, defaults.GetProperty("content").GetString());
        Assert.Equal(12, defaults.GetProperty("generation_settings").GetProperty("n_predict").GetInt32());
    }

    [Fact]
    public void N_predict_zero_runs_the_prompt_into_the_slot_and_generates_nothing()
    {
        var expected = _reference.Generate("Lily and Tom", 6);
        var (status, body) = _server.Post("/completion", """{"prompt": "Lily and Tom", "n_predict": 0, "id_slot": 1, "cache_prompt": false}""");
        Assert.Equal(200, status);
        Assert.Equal(string.Empty, body.GetProperty("content").GetString());
        Assert.Equal(0, body.GetProperty("tokens_predicted").GetInt32());
        Assert.Equal(expected.PromptTokens.Count, body.GetProperty("tokens_cached").GetInt32());
        Assert.Equal(expected.PromptTokens.Count, body.GetProperty("timings").GetProperty("prompt_n").GetInt32());
        Assert.Equal(expected.PromptTokens.Count, _server.Get("/slots").Body[1].GetProperty("cache_tokens").GetInt32());

        // The next request on that slot takes all but the prompt's last token from the cache, and answers as alone.
        var (_, next) = _server.Post("/completion", """{"prompt": "Lily and Tom", "n_predict": 6, "temperature": 0, "id_slot": 1}""");
        Assert.Equal(expected.Text, next.GetProperty("content").GetString());
        Assert.Equal(expected.PromptTokens.Count - 1, next.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
    }

    [Fact]
    public void Id_slot_runs_the_request_on_that_slot()
    {
        var expected = _reference.Generate("The little dog", 8);
        foreach (int slot in new[] { 1, 0, 1 })
        {
            var (status, body) = _server.Post("/completion", $$"""{"prompt": "The little dog", "n_predict": 8, "temperature": 0, "id_slot": {{slot}}}""");
            Assert.Equal(200, status);
            Assert.Equal(slot, body.GetProperty("id_slot").GetInt32());
            Assert.Equal(expected.Text, body.GetProperty("content").GetString());
            Assert.Equal(body.GetProperty("tokens_cached").GetInt32(), _server.Get("/slots").Body[slot].GetProperty("cache_tokens").GetInt32());
        }
    }

    [Theory]
    [InlineData("""{"prompt": "Once", "n_predict": -2}""", "n_predict", "n_predict must be -1 (until EOS or the context is full) or an integer >= 0 (0: the prompt only, into the slot's cache), got -2")]
    [InlineData("""{"prompt": "Once", "n_predict": "ten"}""", "n_predict", "n_predict must be an integer, got \"ten\"")]
    [InlineData("""{"prompt": "Once", "n_probs": 3}""", "n_probs", "n_probs is not supported on /completion; /v1/completions lists the likeliest tokens (\"logprobs\": N)")]
    [InlineData("""{"prompt": "Once", "id_slot": 2}""", "id_slot", "id_slot must be -1 (any free slot) or a slot of this server, 0 to 1 (kvaq serve --parallel), got 2")]
    [InlineData("""{"prompt": "Once", "id_slot": -2}""", "id_slot", "got -2")]
    [InlineData("""{"n_predict": 4}""", "prompt", "prompt is required")]
    [InlineData("""{"prompt": "Once", "temperature": -1}""", "temperature", "temperature must be a finite number >= 0")]
    public void Bad_fields_are_refused_naming_them(string json, string param, string message)
    {
        var (status, body) = _server.Post("/completion", json);
        Assert.Equal(400, status);
        var error = body.GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Contains(message, error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Props_shows_the_defaults_the_slots_and_the_model()
    {
        var (status, body) = _server.Get("/props");
        Assert.Equal(200, status);
        Assert.Equal(2, body.GetProperty("total_slots").GetInt32());
        var settings = body.GetProperty("default_generation_settings");
        Assert.Equal(128, settings.GetProperty("n_ctx").GetInt32());
        Assert.Equal(12, settings.GetProperty("n_predict").GetInt32());
        Assert.Equal(0.5f, settings.GetProperty("temperature").GetSingle());
        Assert.Equal(42UL, settings.GetProperty("seed").GetUInt64());
        Assert.EndsWith("stories3M-q80.bin", body.GetProperty("model_path").GetString(), StringComparison.Ordinal);
        Assert.Equal("none", body.GetProperty("chat_template").GetString());
        Assert.StartsWith("kvaq ", body.GetProperty("build_info").GetString(), StringComparison.Ordinal);
        Assert.Equal("k4v2", body.GetProperty("kv").GetString());
        Assert.Equal("cpu", body.GetProperty("device").GetString());
    }

    // A streamed /completion: its data events as JSON, in order (llama-server sends no [DONE] here).
    private (int Status, List<JsonElement> Events) PostStream(string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, new MediaTypeHeaderValue("application/json")) };
        using var response = _server.Client.Send(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(response.Content.ReadAsStream(), Encoding.UTF8);
        string body = reader.ReadToEnd();
        Assert.DoesNotContain("[DONE]", body, StringComparison.Ordinal);
        var events = new List<JsonElement>();
        foreach (var block in body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            Assert.StartsWith("data: ", block, StringComparison.Ordinal);
            events.Add(JsonDocument.Parse(block["data: ".Length..]).RootElement.Clone());
        }

        return ((int)response.StatusCode, events);
    }
}
