using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>
/// Storage of one tensor kind (K or V) of one layer for all its KV heads, with the two halves of attention
/// that read it: raw scores q·k against stored keys, and the probability-weighted sum of stored values.
/// </summary>
internal interface IKvTensorStore : IDisposable
{
    /// <summary>How the tensor is stored.</summary>
    KvSpec Spec { get; }

    /// <summary>Positions held.</summary>
    int Length { get; }

    /// <summary>Exact bytes in use for the positions held.</summary>
    long ByteCount { get; }

    /// <summary>Appends rows [tokens, KvHeads * HeadDim] (finite, checked by the caller).</summary>
    void Append(ReadOnlySpan<float> rows, int tokens);

    /// <summary>scores[r * length + j] = q_r · x_j for the rep query heads in <paramref name="queries"/> and positions j &lt; length.</summary>
    void Scores(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores);

    /// <summary>output[r] += sum_j probs[r * length + j] * x_j.</summary>
    void Accumulate(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output);

    /// <summary>
    /// Whether <see cref="Scores"/> and <see cref="Accumulate"/> for <paramref name="rep"/> query heads are, row by row,
    /// <see cref="Numerics.AttentionKernels.MultiDot"/> and <see cref="Numerics.AttentionKernels.MultiAxpy"/> over the
    /// rows <see cref="Read"/> returns, in position order (so a batch of queries can read each row once).
    /// </summary>
    bool AttendsReadRows(int rep) => false;

    /// <summary>Rows [start, start + count) of one head as the store returns them, into dst [count, HeadDim].</summary>
    void Read(int kvHead, int start, int count, Span<float> dst);

    /// <summary>Forgets all positions.</summary>
    void Clear();

    /// <summary>Writes the stored bytes of the positions held (<see cref="ByteCount"/> of them), head after head.</summary>
    void WriteState(KvStateWriter writer);

    /// <summary>Replaces the state by <paramref name="length"/> positions read as <see cref="WriteState"/> wrote them.</summary>
    void ReadState(KvStateReader reader, int length);

    /// <summary>Whether keeping the first <paramref name="length"/> positions is exactly the state they alone would build.</summary>
    bool CanTruncate(int length);

    /// <summary>Keeps the first <paramref name="length"/> positions (requires <see cref="CanTruncate"/>).</summary>
    void Truncate(int length);
}
