using KvAdaQuant.Model;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// The shape of a model written with seeded random weights by <c>kvaq convert --synthetic</c>: real sizes
/// (Llama 3.2 1B, Llama 3.1 8B, Qwen2.5 0.5B) for speed benchmarks, and tiny ones for tests.
/// </summary>
public sealed record SyntheticModelPreset(string Name, ModelConfig Config, bool QkvBias)
{
    /// <summary>All presets by name.</summary>
    public static IReadOnlyList<SyntheticModelPreset> All { get; } =
    [
        new("llama-3.2-1b", Llama(2048, 8192, 16, 32, 8, 128256, 131072, 500000f, new RopeScaling(32f, 1f, 4f, 8192), tied: true), false),
        new("llama-3.1-8b", Llama(4096, 14336, 32, 32, 8, 128256, 131072, 500000f, new RopeScaling(8f, 1f, 4f, 8192), tied: false), false),
        new("qwen2.5-0.5b", Qwen2(896, 4864, 24, 14, 2, 151936, 32768, 1000000f, 1e-6f), true),
        new("tiny-llama", Llama(128, 384, 2, 8, 2, 512, 512, 500000f, new RopeScaling(32f, 1f, 4f, 8192), tied: false), false),
        new("tiny-qwen2", Qwen2(128, 320, 2, 4, 2, 512, 512, 1000000f, 1e-6f), true),

        // Every row a multiple of 256 elements, so llama.cpp's quantizer can give each matrix a K-quant type (Q4_K_M tests);
        // heads of 32, whose attention kvaq computes in ggml's order (the fused kernels take multiples of 64).
        new("tiny-llama-256", Llama(256, 768, 2, 8, 2, 512, 512, 500000f, new RopeScaling(32f, 1f, 4f, 8192), tied: false), false),

        // Heads of 64 (GQA 2), the smallest shape the fused and int8 attention kernels take with 2-bit codes.
        new("tiny-llama-64", Llama(256, 512, 2, 4, 2, 512, 512, 500000f, new RopeScaling(32f, 1f, 4f, 8192), tied: false), false),
    ];

    /// <summary>Preset names, comma-separated.</summary>
    public static string Names => string.Join(", ", All.Select(p => p.Name));

    /// <summary>Finds a preset; throws naming the known ones.</summary>
    public static SyntheticModelPreset Find(string name) => All.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"--synthetic: unknown preset '{name}'; known presets: {Names}");

    /// <summary>A Llama configuration (head dim = dim / heads, RMS eps 1e-5, interleaved rope), as the llama presets use.</summary>
    public static ModelConfig Llama(int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int ctx, float theta, RopeScaling scaling, bool tied) => new()
    {
        Architecture = "llama",
        Dim = dim,
        HiddenDim = hidden,
        Layers = layers,
        Heads = heads,
        KvHeads = kvHeads,
        HeadDim = dim / heads,
        VocabSize = vocab,
        ContextLength = ctx,
        NormEps = 1e-5f,
        RopeTheta = theta,
        RopeScaling = scaling,
        RopeLayout = RopeLayout.Interleaved,
        TiedEmbeddings = tied,
    };

    private static ModelConfig Qwen2(int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int ctx, float theta, float eps) => new()
    {
        Architecture = "qwen2",
        Dim = dim,
        HiddenDim = hidden,
        Layers = layers,
        Heads = heads,
        KvHeads = kvHeads,
        HeadDim = dim / heads,
        VocabSize = vocab,
        ContextLength = ctx,
        NormEps = eps,
        RopeTheta = theta,
        RopeLayout = RopeLayout.HalfSplit,
        TiedEmbeddings = true,
    };
}
