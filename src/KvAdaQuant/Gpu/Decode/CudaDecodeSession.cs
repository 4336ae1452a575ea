using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// One sequence on a batch-1 <see cref="CudaDecoder"/> as an <see cref="IDecodeSession"/> (what <see cref="ChatSession"/>
/// runs on): the prompt runs through <see cref="CudaDecoder.Prefill"/> in chunks, the logits copied back to the host only
/// after its last token; each decoded token's logits are copied back, so sampling (every <see cref="Sampler"/> setting)
/// runs on the host, as <see cref="CudaGenerator"/>'s host-sampling overload does. The decoder is not owned: dispose it
/// after the session.
/// </summary>
public sealed class CudaDecodeSession : IDecodeSession
{
    private readonly CudaDecoder _decoder;
    private readonly float[] _logits;
    private readonly int[] _one = new int[1];

    /// <summary>Creates a session over <paramref name="decoder"/> (batch 1), from position 0.</summary>
    public CudaDecodeSession(CudaDecoder decoder)
    {
        ArgumentNullException.ThrowIfNull(decoder);
        if (decoder.Batch != 1)
        {
            throw new ArgumentException($"a decode session runs one sequence; this decoder has a batch of {decoder.Batch}", nameof(decoder));
        }

        _decoder = decoder;
        _logits = new float[decoder.VocabSize];
        decoder.Reset();
    }

    /// <summary>The decoder.</summary>
    public CudaDecoder Decoder => _decoder;

    /// <inheritdoc/>
    public int Position => _decoder.Position;

    /// <inheritdoc/>
    public int Capacity => _decoder.Capacity;

    /// <inheritdoc/>
    public long ByteCount => _decoder.CacheBytes;

    /// <inheritdoc/>
    public string Device => "the GPU";

    /// <inheritdoc/>
    public ReadOnlySpan<float> Logits => _logits;

    /// <inheritdoc/>
    /// <remarks>The tokens are checked (vocabulary, positions left) before any runs.</remarks>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens) => Prefill(tokens, null);

    /// <inheritdoc/>
    /// <remarks>
    /// In the decoder's chunks (<see cref="CudaDecoder.Prefill(ReadOnlySpan{int}, PositionLogitsHandler?)"/>), not position
    /// by position: each position's logits come from the classifier after its chunk. The tokens are checked before any runs.
    /// </remarks>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler? onLogits)
    {
        if (tokens.IsEmpty)
        {
            return _logits;
        }

        if ((long)Position + tokens.Length > Capacity)
        {
            throw new KvCacheException($"context full: {tokens.Length} tokens after {Position} positions do not fit in the GPU cache of {Capacity}");
        }

        foreach (int t in tokens)
        {
            if ((uint)t >= (uint)_logits.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {t} is outside the vocabulary of {_logits.Length}");
            }
        }

        _decoder.Prefill(tokens, onLogits);
        _decoder.CopyLogits(_logits);
        return _logits;
    }

    /// <inheritdoc/>
    public ReadOnlySpan<float> Decode(int token)
    {
        _one[0] = token;
        _decoder.Step(_one);
        _decoder.CopyLogits(_logits);
        return _logits;
    }

    /// <inheritdoc/>
    /// <remarks>As <see cref="CudaDecoder.CanTruncate"/>: FP16 layers always; packed layers while no position at or after <paramref name="length"/> has left the FP16 window.</remarks>
    public bool CanTruncate(int length) => _decoder.CanTruncate(length);

    /// <inheritdoc/>
    public void Truncate(int length) => _decoder.Truncate(length);

    /// <inheritdoc/>
    public void Reset()
    {
        _decoder.Reset();
        Array.Clear(_logits);
    }
}
