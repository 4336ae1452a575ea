using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// An <see cref="IDecodeSession"/> that is not an <see cref="InferenceSession"/> (as the GPU's is not): forwards to one,
/// counts the calls, and can refuse to cut back. For tests of ChatSession and RequestGenerator through the interface.
/// </summary>
internal sealed class ForwardingDecodeSession(InferenceSession inner) : IDecodeSession
{
    /// <summary>Answer false to every <see cref="CanTruncate"/> (a session that cannot cut back).</summary>
    public bool RefuseTruncate { get; init; }

    public int Prefills { get; private set; }

    public int Decodes { get; private set; }

    public int Truncations { get; private set; }

    public int Position => inner.Position;

    public int Capacity => inner.Cache.Layout.Capacity;

    public long ByteCount => inner.Cache.ByteCount;

    public string Device => "a test fake";

    public ReadOnlySpan<float> Logits => inner.Logits;

    /// <summary>A CPU session over <paramref name="transformer"/> with the <paramref name="kv"/> spec and <paramref name="ctx"/> positions.</summary>
    public static InferenceSession NewSession(Transformer transformer, string kv, int ctx) =>
        new(transformer, KvCacheFactory.Create(KvPlan.Parse(kv, transformer.Config.Layers), transformer.CacheLayout(ctx)));

    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens)
    {
        Prefills++;
        return inner.Prefill(tokens);
    }

    public ReadOnlySpan<float> Decode(int token)
    {
        Decodes++;
        return inner.Decode(token);
    }

    public bool CanTruncate(int length) => !RefuseTruncate && inner.CanTruncate(length);

    public void Truncate(int length)
    {
        Truncations++;
        inner.Truncate(length);
    }

    public void Reset() => inner.Reset();
}
