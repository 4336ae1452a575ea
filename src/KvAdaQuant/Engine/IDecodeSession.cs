namespace KvAdaQuant.Engine;

/// <summary>
/// One sequence being decoded, wherever its engine and KV cache live: the CPU engine's <see cref="InferenceSession"/>
/// or the GPU's <c>CudaDecodeSession</c>. Logits come back to the host after each call, so sampling (every
/// <see cref="Sampler"/> setting) runs on the host. What <see cref="ChatSession"/> works on.
/// </summary>
public interface IDecodeSession
{
    /// <summary>Positions processed (the tokens the cache holds).</summary>
    int Position { get; }

    /// <summary>Positions the cache holds in all.</summary>
    int Capacity { get; }

    /// <summary>Bytes of the KV cache.</summary>
    long ByteCount { get; }

    /// <summary>Where the KV cache lives, for messages: "the CPU", "the GPU".</summary>
    string Device { get; }

    /// <summary>Logits of the last position processed, on the host (valid until the next call).</summary>
    ReadOnlySpan<float> Logits { get; }

    /// <summary>Processes <paramref name="tokens"/> after what the cache holds and returns the logits of the last one.</summary>
    ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens);

    /// <summary>Processes one token and returns its logits.</summary>
    ReadOnlySpan<float> Decode(int token);

    /// <summary>
    /// Processes <paramref name="tokens"/> like <see cref="Prefill(ReadOnlySpan{int})"/>, handing <paramref name="onLogits"/>
    /// the logits after each of them (a prompt's log-probabilities), and returns the logits of the last one. This default
    /// runs them position by position through <see cref="Decode"/>; the CPU engine runs them in batches.
    /// </summary>
    ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler onLogits)
    {
        ArgumentNullException.ThrowIfNull(onLogits);
        for (int i = 0; i < tokens.Length; i++)
        {
            onLogits(i, Decode(tokens[i]));
        }

        return Logits;
    }

    /// <summary>
    /// Whether keeping only the first <paramref name="length"/> positions (<see cref="Truncate"/>) leaves exactly the
    /// state those positions alone would have built: FP32/FP16 caches always; quantized ones where the kept positions
    /// are held as appending them alone holds them (per-token groups without a window at any length, per-channel
    /// groups at a chunk's end, any cache while the positions after the cut are still in FP16; a quantized row cannot
    /// become its FP16 row again).
    /// </summary>
    bool CanTruncate(int length);

    /// <summary>Keeps the first <paramref name="length"/> positions; a <see cref="KvCache.KvCacheException"/> when <see cref="CanTruncate"/> is false.</summary>
    void Truncate(int length);

    /// <summary>Forgets the sequence (position 0).</summary>
    void Reset();

    /// <summary>
    /// Says that the session's request ended and it will not process tokens until it is given more: sessions that
    /// decode their steps together (<see cref="BatchingEngine"/>) stop waiting for it. Nothing to do for a session alone.
    /// </summary>
    void Idle()
    {
    }

    /// <summary>
    /// Processes <paramref name="tokens"/> like <see cref="Prefill(ReadOnlySpan{int})"/> with <paramref name="observer"/>
    /// watching the forward passes (<see cref="EmbeddingCapture"/>); the CPU engine's sessions only (a
    /// <see cref="NotSupportedException"/> elsewhere).
    /// </summary>
    ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, IForwardObserver observer) =>
        throw new NotSupportedException($"the forward pass on {Device} cannot be observed");

    /// <summary>
    /// The CPU engine's session that holds this sequence's cache, for state files (<see cref="SessionStateFile"/>): the
    /// session itself, or the one a <see cref="BatchingEngine"/> session runs on; null where the cache is not the CPU
    /// engine's (the GPU's), whose state cannot be saved.
    /// </summary>
    InferenceSession? StateSession => null;
}
