using KvAdaQuant.Formats;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// <see cref="LlamaCppTensorTrace"/>: llama.cpp's intermediate tensors as it evaluates, and ggml's arithmetic as our
/// kernels reproduce it, operation by operation, on llama.cpp's own inputs.
/// </summary>
public class LlamaCppTensorTraceTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    // Our kernels follow the AVX-512 build of ggml (the variant LLamaSharp loads on an AVX-512 CPU); with another
    // variant llama.cpp rounds differently and only closeness can be asserted.
    private static readonly bool BitExact = LlamaCppRuntime.TryLoad(out var info) && info.Variant == "avx512";

    private static bool Same(float a, float b) => BitExact
        ? BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b)
        : Math.Abs(a - b) <= 1e-5f * (1 + Math.Abs(a));

    private static int[] Tokens(int n)
    {
        using var text = ModelLoader.Load("stories260K");
        return text.Tokenizer!.Encode(File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..500], addBos: true).Take(n).ToArray();
    }

    [LlamaCppFact]
    public void Trace_RecordsTheFilteredTensorsWithShapesAndTheLogits()
    {
        var gguf = converted.Get("stories260K", GgmlType.F32);
        var tokens = Tokens(8);
        using var trace = new LlamaCppTensorTrace(name => name is "attn_norm-0" or "kq_soft_max-0" or "result_output");
        using var model = LlamaCppModel.Load(gguf);
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = 8, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1, Trace = trace });
        var logits = ctx.EvaluateAll(tokens);

        Assert.Equal(["attn_norm-0", "kq_soft_max-0", "result_output"], trace.Tensors.Select(t => t.Name).ToArray());
        var norm = trace.Find("attn_norm-0")!;
        Assert.Equal("MUL", norm.Op);
        Assert.Equal([64L, 8, 1, 1], norm.Shape);
        var soft = trace.Find("kq_soft_max-0")!;
        Assert.Equal("SOFT_MAX", soft.Op);
        Assert.Equal(8, soft.Shape[1]); // queries
        Assert.Equal(8, soft.Shape[2]); // heads
        var output = trace.Find("result_output")!;
        Assert.Equal([512L, 8, 1, 1], output.Shape);
        Assert.Equal(logits, output.Values);
        Assert.Null(trace.Find("no-such-tensor"));

        trace.Clear();
        Assert.Empty(trace.Tensors);
    }

    [LlamaCppFact]
    public void OurSoftMaxSwiGluAndNorm_ReproduceLlamaCppBitForBitOnItsOwnInputs()
    {
        var gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var c = ours.Config;
        var tokens = Tokens(40);
        int n = tokens.Length;
        using var trace = new LlamaCppTensorTrace(name => name.EndsWith("-0", StringComparison.Ordinal) || name == "embd");
        using var model = LlamaCppModel.Load(gguf);
        using var ctx = model.CreateContext(new LlamaCppContextOptions { ContextSize = n, TypeK = LlamaCppCacheType.F32, TypeV = LlamaCppCacheType.F32, Threads = 1, Trace = trace });
        ctx.EvaluateAll(tokens);

        // RMSNorm (sum of squares in double) times the weight.
        var embd = trace.Find("embd")!;
        var attnNorm = trace.Find("attn_norm-0")!;
        var row = new float[c.Dim];
        for (int t = 0; t < n; t++)
        {
            Kernels.RmsNorm(embd.Row(t), ours.Weights.Layers[0].AttentionNorm, c.NormEps, row);
            for (int i = 0; i < c.Dim; i++)
            {
                Assert.True(Same(attnNorm.Row(t)[i], row[i]), $"attn_norm position {t}, element {i}");
            }
        }

        // softmax of kq * scale over the causal prefix (the masked rest is exactly 0 in llama.cpp's row).
        var kq = trace.Find("kq-0")!;
        var soft = trace.Find("kq_soft_max-0")!;
        float scale = 1f / MathF.Sqrt(c.HeadDim);
        long rows = kq.Shape[1] * kq.Shape[2];
        for (long r = 0; r < rows; r++)
        {
            int length = (int)(r % n) + 1;
            var s = kq.Row(r)[..length].ToArray();
            for (int j = 0; j < length; j++)
            {
                s[j] *= scale;
            }

            Kernels.SoftMax(s);
            var expected = soft.Row(r);
            for (int j = 0; j < length; j++)
            {
                Assert.True(Same(expected[j], s[j]), $"softmax row {r}, column {j}: llama.cpp {expected[j]:R}, ours {s[j]:R}");
            }
        }

        // SwiGLU on llama.cpp's gate and up rows (172 wide: 160 through ggml's vector exp, 12 through expf).
        var gate = trace.Find("ffn_gate-0")!.Values!;
        var up = trace.Find("ffn_up-0")!.Values!;
        var swiglu = trace.Find("ffn_swiglu-0")!.Values!;
        var g = (float[])gate.Clone();
        Kernels.SwiGlu(g, up, c.HiddenDim);
        for (int i = 0; i < g.Length; i++)
        {
            Assert.True(Same(swiglu[i], g[i]), $"swiglu element {i}: llama.cpp {swiglu[i]:R}, ours {g[i]:R}");
        }
    }
}
