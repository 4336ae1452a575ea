using System.Net;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Cli.Serve;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// <see cref="RequestGenerator"/> on the GPU (<see cref="CudaDecodeSession"/>, what <c>kvaq serve --device cuda</c> runs):
/// with an FP16 cache its requests equal the CPU engine's with an FP16 cache token for token, prompt reuse included (the
/// whole cache, a prefix cut back exactly, none); with k4v2 a request equals <see cref="CudaGenerator"/>'s host-sampled
/// run and the cache is cut back only while the positions after the cut are in the FP16 window; the real server
/// (<see cref="KvaqServer"/>, in process: the GPU machine has no .NET to start kvaq with) answers as the CPU engine.
/// Runs only where libcuda and NVRTC load; skipped with the reason elsewhere.
/// </summary>
public class CudaServeTests(ITestOutputHelper output)
{
    private const string First = "Once upon a time, there was a little dog named Max.";
    private const string Shares = "Once upon a time, there was a little cat named Tom.";
    private const string Other = "One day a bird sang.";
    private static readonly Sampler Greedy = new(0f, 0, 1f, 1);

    [SkippableTheory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void GpuRequestsEqualTheCpuWithAnFp16CachePromptReuseIncluded(string name)
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load(name);
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 256);
        var (decoder, cpuSession) = (engines.Decoder, engines.Cpu);
        var cpu = new RequestGenerator(cpuSession, tok);
        var gpu = new RequestGenerator(new CudaDecodeSession(decoder), tok);

        var first = tok.Encode(First, addBos: true);
        var held = cpu.Generate(first, 16, Greedy, null, reusePrefix: true);
        var extends = first.Concat(held.Tokens.Take(15)).Concat(tok.Encode(" The dog was happy.", addBos: false)).ToList();
        var shares = tok.Encode(Shares, addBos: true);
        var penalties = new Sampler { RepeatPenalty = 1.3f, FrequencyPenalty = 0.1f };

        // A first request, one extending the cache (only its new tokens run), one sharing a prefix (the cache cut back to
        // it), one sharing BOS, the extending prompt again without cache_prompt (a fresh run), and one with penalties.
        var requests = new (List<int> Prompt, bool Reuse, Sampler Sampler)[]
        {
            (first, true, Greedy), (extends, true, Greedy), (shares, true, Greedy), (tok.Encode(Other, addBos: true), true, Greedy),
            (extends, false, Greedy), (first, true, penalties),
        };
        cpu = new RequestGenerator(cpuSession, tok);
        var results = new List<GenerationResult>();
        var reused = new List<int>();
        foreach (var (prompt, reuse, sampler) in requests)
        {
            var c = cpu.Generate(prompt, 16, sampler, null, reusePrefix: reuse);
            var g = gpu.Generate(prompt, 16, sampler, null, reusePrefix: reuse);
            output.WriteLine($"{name}: reused {gpu.ReusedTokens} of {prompt.Count}; GPU {string.Join(' ', g.Tokens)}");
            Assert.Equal(c.PromptTokens, g.PromptTokens);
            Assert.Equal(c.Tokens, g.Tokens);
            Assert.Equal(c.Text, g.Text);
            Assert.Equal(c.StopReason, g.StopReason);
            Assert.Equal(cpu.ReusedTokens, gpu.ReusedTokens);
            Assert.Equal(cpu.Tokens, gpu.Tokens);
            Assert.Equal(gpu.Tokens.Count, decoder.Position);
            Assert.Equal(decoder.CacheBytes, g.KvBytes);
            results.Add(g);
            reused.Add(gpu.ReusedTokens);
        }

        Assert.Equal([0, first.Count + 15, extends.Zip(shares).TakeWhile(p => p.First == p.Second).Count(), 1, 0, first.Count - 1], reused);
        Assert.Equal(results[4].Tokens, results[1].Tokens); // the extending prompt answers as a fresh run of it
    }

    [SkippableFact]
    public void GpuK4V2RequestEqualsTheHostSampledGeneratorAndIsCutBackOnlyInsideTheWindow()
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories3M-q80");
        var tok = model.Tokenizer!;
        using var decoder = new CudaDecoder(context, model, KvPlan.Parse("k4v2", model.Config.Layers), 1, 256);
        var once = tok.Encode("Once upon a time", addBos: true);
        var first = tok.Encode(First, addBos: true);
        var shares = tok.Encode(Shares, addBos: true);
        int common = first.Zip(shares).TakeWhile(p => p.First == p.Second).Count();
        Assert.InRange(common, once.Count, shares.Count - 2);

        // 5 prompt tokens and 120 generated: past the FP16 window (64 + 32), so the device quantizes the oldest rows.
        var reference = new CudaGenerator(decoder, tok).Generate("Once upon a time", 120, new Sampler());
        var gen = new RequestGenerator(new CudaDecodeSession(decoder), tok);
        var freshShares = gen.Generate(shares, 12, Greedy, null, reusePrefix: false);

        // The cache holds `shares` and 11 tokens, all in the window: "Once upon a time" is cut back to (all but its last token).
        var r = gen.Generate(once, 120, Greedy, null, reusePrefix: true);
        Assert.Equal(once.Count - 1, gen.ReusedTokens);
        Assert.Equal(reference.PromptTokens, r.PromptTokens);
        Assert.Equal(reference.Tokens, r.Tokens);
        Assert.Equal(reference.Text, r.Text);
        Assert.True(decoder.PackedState.Quantized >= 32, $"quantized rows {decoder.PackedState.Quantized} at position {decoder.Position}");

        // The positions after the common prefix are quantized now: the next prompt starts over, and answers as a fresh run.
        Assert.False(decoder.CanTruncate(once.Count - 1));
        var afterQuantized = gen.Generate(first, 12, Greedy, null, reusePrefix: true);
        Assert.Equal(0, gen.ReusedTokens);

        // Inside the window (first + 11 tokens, no flush): the common prefix is kept, and the answer is a fresh run's.
        Assert.True(decoder.CanTruncate(common));
        var cut = gen.Generate(shares, 12, Greedy, null, reusePrefix: true);
        Assert.Equal(common, gen.ReusedTokens);
        Assert.Equal(freshShares.Tokens, cut.Tokens);
        Assert.Equal(gen.Tokens.Count, decoder.Position);
        Assert.Equal(afterQuantized.Tokens, gen.Generate(first, 12, Greedy, null, reusePrefix: false).Tokens);
        output.WriteLine($"k4v2: {string.Join(' ', cut.Tokens)}");

        gen.Generate(once, 120, Greedy, null, reusePrefix: false);
        var e = Assert.Throws<KvCacheException>(() => decoder.Truncate(2));
        Assert.StartsWith($"the GPU KV cache k4v2 cannot be cut back to 2 of its {decoder.Position} positions exactly", e.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task TheServerOnTheGpuAnswersAsTheCpuWithAnFp16CacheAndReusesItsCache()
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 256);
        var (decoder, cpuSession) = (engines.Decoder, engines.Cpu);
        var cpu = new RequestGenerator(cpuSession, tok);
        await using var server = await InProcessServer.Start(new CudaDecodeSession(decoder), decoder.Layout.Name, model);

        const string Prompt = "Once upon a time";
        var body = await server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prompt, max_tokens = 24 }));
        var expected = cpu.Generate(tok.Encode(Prompt, addBos: true), 24, new Sampler(), null, reusePrefix: true);
        string reply = body.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(expected.Text, reply);
        Assert.Equal(expected.PromptTokens.Count, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(24, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var kvaq = body.GetProperty("kvaq");
        Assert.Equal("cuda", kvaq.GetProperty("device").GetString());
        Assert.Equal("fp16", kvaq.GetProperty("kv").GetString());
        Assert.Equal(decoder.CacheBytes, kvaq.GetProperty("kv_bytes").GetInt64());
        Assert.Equal(256, kvaq.GetProperty("ctx").GetInt32());

        // The next prompt extends the previous prompt and reply: only its new tokens run, and it answers as a fresh run.
        string next = Prompt + reply + " The dog was happy.";
        body = await server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = next, max_tokens = 16 }));
        var expectedNext = cpu.Generate(tok.Encode(next, addBos: true), 16, new Sampler(), null, reusePrefix: true);
        Assert.Equal(expectedNext.Text, body.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(cpu.ReusedTokens, body.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32());
        Assert.True(cpu.ReusedTokens > expected.PromptTokens.Count, $"{cpu.ReusedTokens} tokens reused");
    }

    [SkippableTheory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public async Task LogprobsOnTheGpuAreTheCpusWithAnFp16CacheGeneratedPromptAndServed(string name)
    {
        using CudaContext context = Open();
        using var model = ModelLoader.Load(name);
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 256);
        var (decoder, cpuSession) = (engines.Decoder, engines.Cpu);
        var prompt = tok.Encode(First, addBos: true);
        var options = new LogprobOptions(3) { Prompt = true };

        // The prompt's entries through the interface's position-by-position prefill, the generated ones from the host copy.
        var gpu = new Generator(new CudaDecodeSession(decoder), tok).Generate(prompt, 0, 24, Greedy, logprobs: options);
        var cpu = new Generator(cpuSession, tok).Generate(prompt, 0, 24, Greedy, logprobs: options);
        Assert.Equal(cpu.Tokens, gpu.Tokens);
        var pairs = cpu.PromptLogprobs!.Concat(cpu.Logprobs!).Zip(gpu.PromptLogprobs!.Concat(gpu.Logprobs!)).ToList();
        Assert.Equal(prompt.Count - 1 + 24, pairs.Count);
        double worst = pairs.Max(p => Math.Abs(p.First.Logprob - p.Second.Logprob));
        output.WriteLine($"{name}: {pairs.Count} entries, largest |CPU - GPU| log-probability {worst:G3}");
        Assert.True(worst < 0.02, $"largest difference {worst}");
        Assert.All(pairs, p => Assert.Equal(p.First.Token, p.Second.Token));

        // The server: echo with logprobs and max_tokens 0 scores the prompt as the CPU does.
        await using var server = await InProcessServer.Start(new CudaDecodeSession(decoder), decoder.Layout.Name, model);
        var body = await server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = First, max_tokens = 0, echo = true, logprobs = 1 }));
        var served = body.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("token_logprobs").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(prompt.Count - 1, served.Length);
        for (int i = 0; i < served.Length; i++)
        {
            Assert.True(Math.Abs(served[i] - cpu.PromptLogprobs![i].Logprob) < 0.02, $"prompt token {i + 1}: {served[i]} vs {cpu.PromptLogprobs[i].Logprob}");
        }
    }

    [SkippableFact]
    public async Task LlamaServersEndpointsAndPromptBatchesRunOnTheGpuAsOnTheCpu()
    {
        // Session 31's serve additions through the GPU session: /completion, a batch of prompts, slot erase; slot files
        // and embeddings are refused there (state files and observed passes are the CPU engine's).
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 256);
        var (decoder, cpuSession) = (engines.Decoder, engines.Cpu);
        var cpu = new RequestGenerator(cpuSession, tok);
        string[] prompts = [First, Other];
        var expected = prompts.Select(p => cpu.Generate(tok.Encode(p, addBos: true), 12, new Sampler(), null)).ToArray();
        var folder = Directory.CreateTempSubdirectory("kvaq-gpu-slots").FullName;
        try
        {
            await using var server = await InProcessServer.Start(new CudaDecodeSession(decoder), decoder.Layout.Name, model, folder);
            var native = await server.Post("/completion", JsonSerializer.Serialize(new { prompt = First, n_predict = 12 }));
            Assert.Equal(expected[0].Text, native.GetProperty("content").GetString());
            Assert.Equal("limit", native.GetProperty("stop_type").GetString());

            var batch = await server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = prompts, max_tokens = 12 }));
            Assert.Equal(expected.Select(e => e.Text), batch.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("text").GetString()));

            var erase = await server.Post("/slots/0?action=erase", "{}");
            Assert.Equal(expected[1].PromptTokens.Count + expected[1].Tokens.Count - 1, erase.GetProperty("n_erased").GetInt32());
            Assert.Equal(0, decoder.Position);

            var (status, refused) = await server.PostRaw("/slots/0?action=save", """{"filename": "a.bin"}""");
            Assert.Equal(501, status);
            Assert.Contains("the KV cache is on the GPU", refused.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.Empty(Directory.GetFiles(folder));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [SkippableFact]
    public async Task ConstrainedRequestsOnTheGpuAnswerAsTheCpuWithAnFp16Cache()
    {
        // A json_schema on /v1/completions and a GBNF grammar on /completion (session 38): the GPU session samples on the
        // host, so the constraint applies; with FP16 caches the text is the CPU engine's under the same constraint.
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories3M-q80");
        var tok = model.Tokenizer!;
        using var engines = new GpuAndCpuFp16(context, model, 256);
        var (decoder, cpuSession) = (engines.Decoder, engines.Cpu);
        const string schema = """{"type":"object","properties":{"name":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":0,"maximum":99}},"required":["name","age"]}""";
        const string pattern = "root ::= [0-9]{3} \"-\" [a-z]{1,8} \".\"";
        var prompt = tok.Encode(First, addBos: true);
        var cpu = new RequestGenerator(cpuSession, tok);
        var json = cpu.Generate(prompt, 60, new Sampler { Grammar = new GrammarConstraint(GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(schema)), tok) }, null, reusePrefix: false);
        var code = cpu.Generate(prompt, 60, new Sampler { Grammar = new GrammarConstraint(GbnfGrammar.Parse(pattern), tok) }, null, reusePrefix: false);
        output.WriteLine($"CPU: {json.Text} | {code.Text}");

        await using var server = await InProcessServer.Start(new CudaDecodeSession(decoder), decoder.Layout.Name, model);
        var body = await server.Post("/v1/completions", $$"""{"prompt": {{JsonSerializer.Serialize(First)}}, "max_tokens": 60, "json_schema": {{schema}}}""");
        string text = body.GetProperty("choices")[0].GetProperty("text").GetString()!;
        output.WriteLine($"GPU json_schema: {text}");
        Assert.Equal(json.Text, text);
        Assert.Equal("stop", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        using (var doc = JsonDocument.Parse(text))
        {
            Assert.InRange(doc.RootElement.GetProperty("age").GetInt32(), 0, 99);
        }

        var native = await server.Post("/completion", JsonSerializer.Serialize(new { prompt = First, n_predict = 60, grammar = pattern }));
        output.WriteLine($"GPU grammar: {native.GetProperty("content").GetString()}");
        Assert.Equal(code.Text, native.GetProperty("content").GetString());
        Assert.True(GbnfGrammar.Parse(pattern).Matches(code.Text), code.Text);
    }

    [SkippableFact]
    public async Task ToolCallsOnTheGpuAreTheCpusWithAnFp16Cache()
    {
        // Tool calling (session 40): the calls' grammar is a constraint sampled on the host, so a required call on the GPU
        // session is the CPU engine's call with FP16 caches.
        using CudaContext context = Open();
        using var model = ModelLoader.Load("stories3M-q80");
        using var engines = new GpuAndCpuFp16(context, model, 512);
        string request = $$"""{"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "tools": {{KvAdaQuant.Tests.Serve.ServeToolsTests.Tools}}, "tool_choice": "required", "max_tokens": 120}""";
        JsonElement cpuCall;
        await using (var cpu = await InProcessServer.Start(engines.Cpu, "fp16", model))
        {
            var body = await cpu.Post("/v1/chat/completions", request);
            Assert.Equal("tool_calls", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            cpuCall = Assert.Single(body.GetProperty("choices")[0].GetProperty("message").GetProperty("tool_calls").EnumerateArray()).Clone();
        }

        await using var server = await InProcessServer.Start(new CudaDecodeSession(engines.Decoder), engines.Decoder.Layout.Name, model);
        var gpu = await server.Post("/v1/chat/completions", request);
        output.WriteLine($"CPU: {cpuCall.GetRawText()}");
        output.WriteLine($"GPU: {gpu.GetRawText()}");
        var choice = gpu.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("message").GetProperty("content").ValueKind);
        var gpuCall = Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray());
        KvAdaQuant.Tests.Serve.ServeToolsTests.AssertWeatherCall(gpuCall);
        Assert.Equal(cpuCall.GetProperty("function").GetRawText(), gpuCall.GetProperty("function").GetRawText());
    }

    private static CudaContext Open() => GpuAndCpuFp16.OpenContext();

    /// <summary><see cref="KvaqServer"/> over one session on a free loopback port in this process, stopped on dispose.</summary>
    private sealed class InProcessServer : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop;
        private readonly ServedModel _served;
        private readonly HttpClient _client;
        private readonly Task _run;

        private InProcessServer(ServedModel served, Task run, string url, CancellationTokenSource stop)
        {
            _stop = stop;
            _served = served;
            _run = run;
            _client = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(120) };
        }

        public static async Task<InProcessServer> Start(IDecodeSession session, string kv, LlamaModel model, string? slotSavePath = null)
        {
            var defaults = new CompletionRequest(null, null, null, 0f, 0, 1f, 42, [], Stream: false);
            var served = new ServedModel("model", model.Path, session, kv, "cuda", model.Tokenizer!, ChatTemplate.None, defaults) { SlotSavePath = slotSavePath };
            served.WarmUp();
            var url = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            var stop = new CancellationTokenSource();
            var run = Task.Run(() => new KvaqServer(served, null, TextWriter.Null).RunAsync(IPAddress.Loopback, 0, u => url.TrySetResult(u), stop.Token));
            var started = await Task.WhenAny(url.Task, run);
            if (started != url.Task)
            {
                await run; // throws why it did not start
            }

            return new InProcessServer(served, run, await url.Task, stop);
        }

        public async Task<(int Status, JsonElement Body)> PostRaw(string path, string json)
        {
            using var response = await _client.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
            return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
        }

        public async Task<JsonElement> Post(string path, string json)
        {
            using var response = await _client.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
            string text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {text}");
            return JsonDocument.Parse(text).RootElement.Clone();
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _run.WaitAsync(TimeSpan.FromSeconds(30));
            _client.Dispose();
            _stop.Dispose();
            _served.Dispose();
        }
    }
}
