using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tests.LlamaCpp;

namespace KvAdaQuant.Tests.Serve;

/// <summary>
/// <c>kvaq serve --embeddings</c> and OpenAI's <c>POST /v1/embeddings</c>: the final hidden states after the final norm,
/// pooled (mean, last, cls) and scaled to unit length, equal llama.cpp's own <c>result_norm</c> pooled the same way
/// within float rounding, and the library's <see cref="EmbeddingCapture"/>; batches, base64, usage; the slot's cache
/// then holds the input; bad input and options are refused naming them.
/// </summary>
public class ServeEmbeddingsTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    private const string Text = "Once upon a time, there was a little dog named Spot.";

    [LlamaCppTheory]
    [InlineData("mean")]
    [InlineData("last")]
    [InlineData("cls")]
    public void Embeddings_equal_llama_cpps_final_norm_pooled_the_same_way(string pooling)
    {
        string gguf = converted.Get("stories3M-q80", GgmlType.F32);
        int[] tokens;
        using (var ours = ModelLoader.Load(gguf))
        {
            tokens = [.. ours.Tokenizer!.Encode(Text, addBos: true)];
        }

        // llama.cpp: every position's result_norm (the final RMSNorm's output, what its embeddings read), FP32 cache.
        using var trace = new LlamaCppTensorTrace(name => name == "result_norm");
        float[] rows;
        int dim;
        using (var model = LlamaCppModel.Load(gguf))
        using (var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = 64, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1, Trace = trace }))
        {
            ctx.EvaluateAll(tokens);
            var norm = trace.Find("result_norm")!;
            dim = (int)norm.Shape[0];
            Assert.Equal(tokens.Length, (int)norm.Shape[1]);
            rows = [.. norm.Values!];
        }

        var expected = new double[dim];
        for (int i = 0; i < dim; i++)
        {
            expected[i] = pooling switch
            {
                "mean" => Enumerable.Range(0, tokens.Length).Average(t => (double)rows[(t * dim) + i]),
                "last" => rows[((tokens.Length - 1) * dim) + i],
                _ => rows[i],
            };
        }

        double length = Math.Sqrt(expected.Sum(v => v * v));
        using var server = new ServeProcess("-m", gguf, "--kv", "fp32", "--ctx", "64", "--threads", "1", "--embeddings", "--pooling", pooling);
        var (status, body) = server.Post("/v1/embeddings", $$"""{"input": [{{string.Join(", ", tokens)}}]}""");
        Assert.True(status == 200, body.ToString());
        var got = body.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(dim, got.Length);
        double worst = Enumerable.Range(0, dim).Max(i => Math.Abs(got[i] - (expected[i] / length)));
        Assert.True(worst < 2e-5, $"largest difference from llama.cpp {worst:E2}");
        Assert.Equal(1.0, Math.Sqrt(got.Sum(v => v * v)), 5);
    }

    [Fact]
    public void Embeddings_are_the_librarys_and_the_slot_then_serves_a_prompt_that_starts_with_the_input()
    {
        string[] texts = ["Once upon a time", "The little dog ran to the park."];
        float[][] expected;
        GenerationResult next;
        using (var reference = new ServeReference("stories3M-q80", "k4v2", 128))
        {
            var generator = new RequestGenerator(reference.Session, reference.Tokenizer);
            expected = [.. texts.Select(t => generator.Embed(reference.Tokenizer.Encode(t, addBos: true), EmbeddingPooling.Mean))];
            Assert.Equal(reference.Tokenizer.Encode(texts[1], addBos: true), generator.Tokens); // the cache holds the last input
            next = reference.Generate(texts[1] + " It", 8);
        }

        using var server = new ServeProcess("-m", "stories3M-q80", "--kv", "k4v2", "--ctx", "128", "--threads", "2", "--embeddings");
        Assert.Contains("embeddings (mean pooling)", server.Stderr, StringComparison.Ordinal);
        var (status, body) = server.Post("/v1/embeddings", JsonSerializer.Serialize(new { input = texts, model = "ignored" }));
        Assert.Equal(200, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        Assert.Equal("stories3M-q80.bin", body.GetProperty("model").GetString());
        var data = body.GetProperty("data").EnumerateArray().ToArray();
        Assert.Equal(2, data.Length);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal("embedding", data[i].GetProperty("object").GetString());
            Assert.Equal(i, data[i].GetProperty("index").GetInt32());
            var v = data[i].GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            Assert.Equal(expected[i].Length, v.Length);
            Assert.True(expected[i].Zip(v).Max(p => Math.Abs(p.First - p.Second)) < 1e-5, $"input {i}");
        }

        int tokens = body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        Assert.Equal(tokens, body.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        // base64: the same floats' little-endian bytes.
        var (_, b64) = server.Post("/v1/embeddings", JsonSerializer.Serialize(new { input = texts[0], encoding_format = "base64" }));
        var bytes = Convert.FromBase64String(b64.GetProperty("data")[0].GetProperty("embedding").GetString()!);
        var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray();
        Assert.True(expected[0].Zip(floats).Max(p => Math.Abs(p.First - p.Second)) < 1e-5);

        // The slot holds the last input: a prompt that extends it takes it from the cache and answers as alone.
        server.Post("/v1/embeddings", JsonSerializer.Serialize(new { input = texts[1] }));
        var (_, completion) = server.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = texts[1] + " It", max_tokens = 8, temperature = 0 }));
        Assert.Equal(next.Text, completion.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.True(completion.GetProperty("kvaq").GetProperty("cached_tokens").GetInt32() > 0);
    }

    [Fact]
    public void Bad_embedding_requests_are_refused_naming_the_field()
    {
        using var server = new ServeProcess("-m", "stories260K", "--ctx", "16", "--threads", "1", "--embeddings", "--pooling", "last");
        (string Json, string Param, string Message)[] cases =
        [
            ("""{"model": "x"}""", "input", "input is required (a string, or an array of token ids)"),
            ("""{"input": ""}""", "input", "input is empty; an embedding needs text"),
            ("""{"input": ["a", ""]}""", "input", "input[1] is empty; an embedding needs text"),
            ("""{"input": ["a", 3]}""", "input", "input[1] must be a string or an array of token ids, got 3"),
            ("""{"input": [1, 99999]}""", "input", "input[1] = 99999 is not a token id of this model (its vocabulary has 512)"),
            ("""{"input": []}""", "input", "input is an empty array of token ids"),
            ("""{"input": "Once upon a time there was a big dog and a little cat who were friends"}""", "input", "but the context holds 16 (kvaq serve --ctx)"),
            ("""{"input": "a", "encoding_format": "hex"}""", "encoding_format", "encoding_format must be \"float\" or \"base64\", got \"hex\""),
            ("""{"input": "a", "encoding_format": 1}""", "encoding_format", "encoding_format must be \"float\" or \"base64\", got 1"),
        ];
        foreach (var (json, param, message) in cases)
        {
            var (status, body) = server.Post("/v1/embeddings", json);
            Assert.True(status == 400, $"{json}: {status} {body}");
            Assert.Equal(param, body.GetProperty("error").GetProperty("param").GetString());
            Assert.Contains(message, body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        }

        // llama-server's other name for the input.
        Assert.Equal(200, server.Post("/v1/embeddings", """{"content": "Once"}""").Status);
    }

    [Fact]
    public void Without_embeddings_the_endpoint_is_not_supported_and_bad_options_are_errors()
    {
        using (var server = new ServeProcess("-m", "stories260K", "--ctx", "16", "--threads", "1"))
        {
            var (status, body) = server.Post("/v1/embeddings", """{"input": "Once"}""");
            Assert.Equal(501, status);
            Assert.Equal("this server does not compute embeddings; start it with --embeddings", body.GetProperty("error").GetProperty("message").GetString());
        }

        (string[] Args, string Message)[] cases =
        [
            (["--pooling", "mean"], "kvaq: error: --pooling has nothing to apply to without --embeddings"),
            (["--embeddings", "--pooling", "max"], "kvaq: error: --pooling: expected mean, last or cls, got 'max'"),
            (["--embeddings", "--device", "cuda"], "kvaq: error: --embeddings runs on the CPU engine; it cannot be combined with --device cuda"),
        ];
        foreach (var (args, message) in cases)
        {
            var (rc, stdout, stderr) = ServeCommandTests.Run(["-m", "stories260K", "--port", "0", .. args]);
            Assert.Equal(1, rc);
            Assert.Equal(message, stderr.Trim());
            Assert.DoesNotContain("listening", stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_capture_pools_the_final_norm_of_every_position()
    {
        // EmbeddingCapture against the rows computed here: the last layer's residual through RMSNorm, pooled.
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 1);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(32)));
        var tokens = model.Tokenizer!.Encode(Text, addBos: true).ToArray();
        var rows = new List<float[]>();
        var last = new LastResidual(model.Config.Layers - 1, model.Config.Dim, rows);
        session.Prefill(tokens, last);
        session.Reset();
        var capture = new EmbeddingCapture(transformer, EmbeddingPooling.Mean);
        var cls = new EmbeddingCapture(transformer, EmbeddingPooling.Cls);
        session.Prefill(tokens.AsSpan(0, 5), capture); // two calls: positions 0-4, then 5..
        session.Prefill(tokens.AsSpan(5), new Both(capture, cls));
        Assert.Equal(tokens.Length, capture.Positions);
        var normed = rows.Select(r =>
        {
            var o = new float[r.Length];
            Kernels.RmsNorm(r, model.Weights.FinalNorm, model.Config.NormEps, o);
            return o;
        }).ToList();
        var mean = Enumerable.Range(0, model.Config.Dim).Select(i => (float)(normed.Sum(r => (double)r[i]) / normed.Count)).ToArray();
        Assert.Equal(mean, capture.Embedding(normalize: false));
        Assert.Throws<InvalidOperationException>(() => cls.Embedding()); // it never saw position 0
        var unit = capture.Embedding();
        Assert.Equal(1.0, Math.Sqrt(unit.Sum(v => (double)v * v)), 6);
        Assert.Equal(mean[0] / Math.Sqrt(mean.Sum(v => (double)v * v)), unit[0], 6);
    }

    private sealed class LastResidual(int layer, int dim, List<float[]> rows) : IForwardObserver
    {
        public void OnKeyValues(int l, int pos0, int tokens, ReadOnlySpan<float> keysPreRope, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
        {
        }

        public void OnAttentionOutput(int l, int pos0, int tokens, ReadOnlySpan<float> attention)
        {
        }

        public void OnResidual(int l, int pos0, int tokens, ReadOnlySpan<float> residual)
        {
            for (int t = 0; l == layer && t < tokens; t++)
            {
                rows.Add(residual.Slice(t * dim, dim).ToArray());
            }
        }
    }

    private sealed class Both(IForwardObserver a, IForwardObserver b) : IForwardObserver
    {
        public void OnKeyValues(int l, int pos0, int tokens, ReadOnlySpan<float> keysPreRope, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
        {
        }

        public void OnAttentionOutput(int l, int pos0, int tokens, ReadOnlySpan<float> attention)
        {
        }

        public void OnResidual(int l, int pos0, int tokens, ReadOnlySpan<float> residual)
        {
            a.OnResidual(l, pos0, tokens, residual);
            b.OnResidual(l, pos0, tokens, residual);
        }
    }
}
