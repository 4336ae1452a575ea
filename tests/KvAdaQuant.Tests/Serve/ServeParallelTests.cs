using KvAdaQuant.Cli.Serve;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

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

    [Fact]
    public void A_requests_choices_run_on_the_free_slots_and_each_is_what_it_is_alone()
    {
        // n = 4 on three free slots: choices 0 and 3 on one slot, 1 and 2 on the others, at once; choice i is the request
        // with seed + i, streamed or not.
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        var expected = Enumerable.Range(0, 4).Select(i => reference.Generate("Once upon a time", 16, new Sampler(0.9f, 40, 1f, (ulong)(7 + i)))).ToArray();
        Assert.True(expected.Select(e => e.Text).Distinct().Count() > 1, "the seeds should give different texts");
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "3");
        const string Request = """{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.9, "top_k": 40, "seed": 7, "n": 4}""";
        var (status, body) = server.Post("/v1/completions", Request);
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices").EnumerateArray().ToArray();
        Assert.Equal(4, choices.Length);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
            Assert.Equal(expected[i].Text, choices[i].GetProperty("text").GetString());
        }

        Assert.Equal(expected.Sum(e => e.Tokens.Count), body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var (streamStatus, events) = server.PostStream("/v1/completions", Request.Replace("\"n\": 4", "\"n\": 4, \"stream\": true", StringComparison.Ordinal));
        Assert.Equal(200, streamStatus);
        Assert.Equal("[DONE]", events[^1]);
        var texts = new System.Text.StringBuilder[4];
        var finishes = new int[4];
        for (int i = 0; i < 4; i++)
        {
            texts[i] = new System.Text.StringBuilder();
        }

        foreach (var e in events.Take(events.Count - 1))
        {
            using var doc = System.Text.Json.JsonDocument.Parse(e);
            var choice = doc.RootElement.GetProperty("choices")[0];
            int index = choice.GetProperty("index").GetInt32();
            texts[index].Append(choice.GetProperty("text").GetString());
            finishes[index] += choice.GetProperty("finish_reason").ValueKind == System.Text.Json.JsonValueKind.String ? 1 : 0;
        }

        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(expected[i].Text, texts[i].ToString());
            Assert.Equal(1, finishes[i]);
        }

        // The last event before [DONE] is choice 3's finish with the usage.
        using var last = System.Text.Json.JsonDocument.Parse(events[^2]);
        Assert.Equal(3, last.RootElement.GetProperty("choices")[0].GetProperty("index").GetInt32());
        Assert.Equal(expected.Sum(e => e.Tokens.Count), last.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public void A_batch_of_prompts_runs_on_the_free_slots_and_each_choice_is_what_it_is_alone()
    {
        // OpenAI's batch: prompt [p0, p1, p2] with n = 2 gives choices 2 p + i, prompt p with seed + i; the six run on
        // three slots at once, streamed or not, and each is the request alone.
        string[] prompts = ["Once upon a time", "The little dog", "One day"];
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        var expected = prompts.SelectMany(p => Enumerable.Range(0, 2).Select(i => reference.Generate(p, 12, new Sampler(0.8f, 40, 1f, (ulong)(5 + i))))).ToArray();
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "3");
        const string Request = """{"prompt": ["Once upon a time", "The little dog", "One day"], "max_tokens": 12, "temperature": 0.8, "top_k": 40, "seed": 5, "n": 2}""";
        var (status, body) = server.Post("/v1/completions", Request);
        Assert.Equal(200, status);
        var choices = body.GetProperty("choices").EnumerateArray().ToArray();
        Assert.Equal(6, choices.Length);
        for (int c = 0; c < 6; c++)
        {
            Assert.Equal(c, choices[c].GetProperty("index").GetInt32());
            Assert.Equal(expected[c].Text, choices[c].GetProperty("text").GetString());
        }

        var usage = body.GetProperty("usage");
        Assert.Equal(prompts.Sum(p => reference.Tokenizer.Encode(p, addBos: true).Count), usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.Sum(e => e.Tokens.Count), usage.GetProperty("completion_tokens").GetInt32());

        var (streamStatus, events) = server.PostStream("/v1/completions", Request.Replace("\"n\": 2", "\"n\": 2, \"stream\": true", StringComparison.Ordinal));
        Assert.Equal(200, streamStatus);
        var texts = Enumerable.Range(0, 6).Select(_ => new System.Text.StringBuilder()).ToArray();
        foreach (var e in events.Take(events.Count - 1))
        {
            using var doc = System.Text.Json.JsonDocument.Parse(e);
            var choice = doc.RootElement.GetProperty("choices")[0];
            texts[choice.GetProperty("index").GetInt32()].Append(choice.GetProperty("text").GetString());
        }

        Assert.Equal(expected.Select(e => e.Text), texts.Select(t => t.ToString()));
        using var last = System.Text.Json.JsonDocument.Parse(events[^2]);
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32(), last.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        // A prompt of a batch that does not fit the context is named.
        var (tooLong, error) = server.Post("/v1/completions", $$"""{"prompt": ["Once", {{System.Text.Json.JsonSerializer.Serialize(string.Concat(Enumerable.Repeat("Once upon a time ", 60)))}}]}""");
        Assert.Equal(400, tooLong);
        Assert.StartsWith("the prompt[1] has ", error.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Metrics_and_slots_count_what_the_requests_did()
    {
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--parallel", "2", "--metrics");
        var before = Metrics(server);
        Assert.Equal(0, before["llamacpp:tokens_predicted_total"]);
        Assert.Equal(0, before["llamacpp:n_decode_total"]);
        Assert.Equal(2, before["kvaq:slots"]);

        string[] prompts = ["Once upon a time", "The little dog"];
        var bodies = new System.Text.Json.JsonElement[2];
        var threads = prompts.Select((p, i) => new Thread(() => bodies[i] = server.Post("/v1/completions", $$"""{"prompt": "{{p}}", "max_tokens": 12, "temperature": 0}""").Body)).ToArray();
        foreach (var t in threads)
        {
            t.Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        int generated = bodies.Sum(b => b.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        int promptRun = bodies.Sum(b => b.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() - b.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
        var after = Metrics(server);
        Assert.Equal(generated, after["llamacpp:tokens_predicted_total"]);
        Assert.Equal(promptRun, after["llamacpp:prompt_tokens_total"]);
        Assert.Equal(2, after["kvaq:requests_total"]);
        Assert.Equal(0, after["llamacpp:requests_processing"]);
        Assert.Equal(0, after["llamacpp:requests_deferred"]);
        Assert.True(after["llamacpp:prompt_seconds_total"] > 0 && after["llamacpp:tokens_predicted_seconds_total"] > 0);

        // Forward passes: at least one per decode step of the longer request, at most one per token run; one or two
        // sequences each.
        int steps = bodies.Max(b => b.GetProperty("usage").GetProperty("completion_tokens").GetInt32()) - 1;
        Assert.InRange(after["llamacpp:n_decode_total"], steps + 1, promptRun + generated);
        Assert.InRange(after["llamacpp:n_busy_slots_per_decode"], 1, 2);

        // A slot's cache holds the prompt of the last request it served and the tokens fed back (all generated but the
        // last), or the warm-up's BOS, or nothing (both requests may have run on one slot if the first ended before the
        // second came); the metrics add the slots up.
        var (status, slots) = server.Get("/slots");
        Assert.Equal(200, status);
        Assert.Equal(2, slots.GetArrayLength());
        var held = bodies.Select(b => b.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() + b.GetProperty("usage").GetProperty("completion_tokens").GetInt32() - 1).ToList();
        var cached = slots.EnumerateArray().Select(s => s.GetProperty("cache_tokens").GetInt32()).ToList();
        Assert.All(cached, n => Assert.True(n <= 1 || held.Contains(n), $"a slot holds {n} tokens; the requests left {string.Join(" and ", held)}"));
        Assert.Contains(cached, held.Contains);
        Assert.Equal(cached.Sum(), after["kvaq:kv_cache_tokens"]);
        foreach (var slot in slots.EnumerateArray())
        {
            Assert.Equal(128, slot.GetProperty("n_ctx").GetInt32());
            Assert.False(slot.GetProperty("is_processing").GetBoolean());
            Assert.Equal("k4v2", slot.GetProperty("kv").GetString());
            Assert.True(slot.GetProperty("kv_bytes").GetInt64() > 0 || slot.GetProperty("cache_tokens").GetInt32() == 0);
        }

        Assert.Equal(slots.EnumerateArray().Sum(s => s.GetProperty("kv_bytes").GetInt64()), after["kvaq:kv_cache_bytes"]);
    }

    [Fact]
    public void Ubatch_sets_the_prompt_tokens_per_forward_pass_and_keeps_the_answer()
    {
        // k4v2 without a window gives every prompt batch size the same bits, so the answer is the default server's.
        using var reference = new ServeReference("stories3M-q80", "k4v2", 128);
        const string Prompt = "Once upon a time, there was a little dog named Max";
        var expected = reference.Generate(Prompt, 6);
        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "-ub", "4", "--metrics");
        var (status, body) = server.Post("/v1/completions", $$"""{"prompt": "{{Prompt}}", "max_tokens": 6, "temperature": 0}""");
        Assert.Equal(200, status);
        Assert.Equal(expected.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
        int run = body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() - body.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32();
        int decodes = body.GetProperty("usage").GetProperty("completion_tokens").GetInt32() - 1;
        var m = Metrics(server);
        Assert.Equal(((run + 3) / 4) + decodes, m["llamacpp:n_decode_total"]); // the prompt in forward passes of 4 tokens
        Assert.Equal(run, m["llamacpp:prompt_tokens_total"]);
    }

    [Theory]
    [InlineData(new[] { "--ubatch", "0" }, "--ubatch must be at least 1, got 0")]
    [InlineData(new[] { "--ubatch-size", "0", "--device", "cuda" }, "--ubatch must be at least 1, got 0")]
    public void Bad_ubatch_values_are_errors_naming_the_option(string[] options, string message)
    {
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run(["serve", "-m", "stories260K", "--port", "0", .. options]);
        Assert.Equal(1, rc);
        Assert.Equal($"kvaq: error: {message}", stderr.Trim());
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void With_device_cuda_ubatch_is_taken_and_only_the_missing_driver_is_named()
    {
        // --ubatch sets the GPU's prefill chunk (CudaDecoder.Prefill); without a driver the error is --device cuda's alone.
        Skip.If(KvAdaQuant.Gpu.Cuda.CudaContext.TryOpen(out var context, out _), "this machine has a CUDA device");
        context?.Dispose();
        var (_, _, plain) = KvAdaQuant.Tests.Cli.KvaqProcess.Run("serve", "-m", "stories260K", "--port", "0", "--device", "cuda");
        Assert.StartsWith("kvaq: error: --device cuda:", plain, StringComparison.Ordinal);
        var (rc, stdout, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run("serve", "-m", "stories260K", "--port", "0", "-ub", "8", "--device", "cuda");
        Assert.Equal(1, rc);
        Assert.Equal(plain, stderr);
        Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void A_slot_given_back_goes_idle_so_the_next_step_does_not_wait_for_it()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        var engine = new BatchingEngine(transformer);
        var sessions = Enumerable.Range(0, 2).Select(_ => new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(32)))).ToArray();
        var defaults = new CompletionRequest(null, null, null, 0f, 0, 1f, 42, [], Stream: false);
        using var served = new ServedModel("model", m.Path, [.. sessions.Select(engine.Session)], "fp32", "cpu", m.Tokenizer!, ChatTemplate.None, defaults);
        var slot = served.Take([1, 5, 9]);
        slot.Session.Prefill([1, 5, 9]);
        slot.Session.Decode(7);
        Assert.Equal(1, engine.AwaitedSessions); // the next step's leader would wait up to 10 ms for this session
        served.Return(slot);
        Assert.Equal(0, engine.AwaitedSessions);
        foreach (var s in sessions)
        {
            s.Dispose();
        }
    }

    [Fact]
    public void Metrics_need_the_option()
    {
        using var server = new ServeProcess("-m", "stories260K", "--ctx", "64");
        var (status, body) = server.Get("/metrics");
        Assert.Equal(501, status);
        Assert.Equal("this server does not serve /metrics; start it with --metrics", body.GetProperty("error").GetProperty("message").GetString());
        var (slotsStatus, slots) = server.Get("/slots");
        Assert.Equal(200, slotsStatus);
        Assert.Equal(1, slots.GetArrayLength());
    }

    // GET /metrics parsed: each sample line's name and value.
    private static Dictionary<string, double> Metrics(ServeProcess server)
    {
        using var response = server.Client.GetAsync("/metrics").GetAwaiter().GetResult();
        Assert.Equal(200, (int)response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);
        string text = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => !l.StartsWith('#'))
            .Select(l => l.Split(' '))
            .ToDictionary(p => p[0], p => double.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));
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
