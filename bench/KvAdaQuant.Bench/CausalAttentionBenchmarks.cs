using BenchmarkDotNet.Attributes;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Bench;

/// <summary>
/// One layer's attention over a whole prefill, as the engine hands it out (blocks of 16 tokens per KV head, one
/// thread): <see cref="IKvLayerCache.AttendCausal"/> (<c>Shared=True</c>: the rows read once per block) against one
/// <see cref="IKvLayerCache.Attend"/> per token (<c>Shared=False</c>), same bits. Two KV heads of two shapes:
/// stories3M-q80's (3 query heads a KV head, head dim 32; a 416-token prompt) and Llama 3.2 1B's (4 query heads a KV
/// head, head dim 64, the fused kernels' shape; a 1,024-token prompt).
/// </summary>
public class CausalAttentionBenchmarks : IDisposable
{
    private const int KvHeads = 2;
    private const int Block = 16;

    private IKvCache? _cache;
    private float[] _queries = [];
    private float[] _output = [];
    private float[] _scratch = [];

    /// <summary>KV cache spec.</summary>
    [Params("fp16", "k4v2")]
    public string Kv { get; set; } = "fp16";

    /// <summary>Attention shape: stories3m (head dim 32) or llama-1b (head dim 64).</summary>
    [Params("stories3m", "llama-1b")]
    public string Shape { get; set; } = "stories3m";

    private int Rep => Shape == "llama-1b" ? 4 : 3;

    private int HeadDim => Shape == "llama-1b" ? 64 : 32;

    // Prompt tokens (the batch attends causally over them).
    private int Tokens => Shape == "llama-1b" ? 1024 : 416;

    /// <summary>Whether the block shares its rows (AttendCausal) or attends token by token.</summary>
    [Params(true, false)]
    public bool Shared { get; set; } = true;

    /// <summary>Fills one layer with the prompt's random keys and values and draws the queries.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var layout = new KvLayout(1, KvHeads, HeadDim, Tokens);
        _cache = KvCacheFactory.Create(Kv, layout);
        var k = new float[Tokens * layout.KvDim];
        var v = new float[k.Length];
        AttentionStepRunner.RandomKeysAndValues(new Random(3), k, v);
        _cache.Layers[0].Append(k, v, Tokens);
        _queries = new float[Tokens * KvHeads * Rep * HeadDim];
        var rng = new Random(5);
        for (int i = 0; i < _queries.Length; i++)
        {
            _queries[i] = (float)((rng.NextDouble() * 4) - 2);
        }

        _output = new float[_queries.Length];
        _scratch = new float[_cache.Layers[0].CausalScratchFloats(Rep, Tokens - Block + 1, Block)];
    }

    /// <summary>Every block of 16 tokens of every KV head, over its causal prefix.</summary>
    [Benchmark]
    public void PrefillAttention()
    {
        var layer = _cache!.Layers[0];
        int qd = KvHeads * Rep * HeadDim;
        for (int t0 = 0; t0 < Tokens; t0 += Block)
        {
            int count = Math.Min(Block, Tokens - t0);
            int span = ((count - 1) * qd) + (Rep * HeadDim);
            for (int g = 0; g < KvHeads; g++)
            {
                var q = _queries.AsSpan((t0 * qd) + (g * Rep * HeadDim), span);
                var o = _output.AsSpan((t0 * qd) + (g * Rep * HeadDim), span);
                if (Shared)
                {
                    layer.AttendCausal(g, q, qd, Rep, t0 + 1, count, o, qd, _scratch);
                }
                else
                {
                    IKvLayerCache.AttendEachToken(layer, g, q, qd, Rep, t0 + 1, count, o, qd, _scratch);
                }
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _cache?.Dispose();
        GC.SuppressFinalize(this);
    }
}
