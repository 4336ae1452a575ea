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
    /// Whether <see cref="ScoresCausal"/> and <see cref="AccumulateCausal"/> share work between a batch's tokens (by
    /// default they do not: one <see cref="Scores"/> / <see cref="Accumulate"/> per token).
    /// </summary>
    bool SharesCausal(int rep) => false;

    /// <summary>
    /// <see cref="Scores"/> for a batch, with the bits of one call per token: token t's <paramref name="rep"/> heads
    /// (queries[t * rep * HeadDim..]) over positions 0..firstLength + t - 1, into scores[t * perToken + r * (firstLength + t) + j].
    /// <paramref name="rows"/> is scratch of <see cref="CausalRows"/> rows and <paramref name="work"/> of tokens x rep x
    /// headDim floats for a store that <see cref="SharesCausal"/>.
    /// </summary>
    void ScoresCausal(int kvHead, ReadOnlySpan<float> queries, int rep, int headDim, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, Span<float> work) =>
        ScoresEachToken(this, kvHead, queries, rep, headDim, firstLength, tokens, scores, perToken);

    /// <summary>
    /// <see cref="Accumulate"/> for a batch, with the bits of one call per token: output[t * outputStride + r * HeadDim..]
    /// += the token's weights (laid out as <see cref="ScoresCausal"/> writes scores) times the rows; scratch as
    /// <see cref="ScoresCausal"/>'s.
    /// </summary>
    void AccumulateCausal(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int headDim, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, Span<float> work) =>
        AccumulateEachToken(this, kvHead, probs, perToken, rep, headDim, firstLength, tokens, output, outputStride);

    /// <summary><see cref="ScoresCausal"/> as one <see cref="Scores"/> per token.</summary>
    static void ScoresEachToken(IKvTensorStore store, int kvHead, ReadOnlySpan<float> queries, int rep, int headDim, int firstLength, int tokens, Span<float> scores, int perToken)
    {
        int n = rep * headDim;
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t;
            store.Scores(kvHead, queries.Slice(t * n, n), rep, length, scores.Slice(t * perToken, rep * length));
        }
    }

    /// <summary><see cref="AccumulateCausal"/> as one <see cref="Accumulate"/> per token.</summary>
    static void AccumulateEachToken(IKvTensorStore store, int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int headDim, int firstLength, int tokens, Span<float> output, int outputStride)
    {
        int n = rep * headDim;
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t;
            store.Accumulate(kvHead, probs.Slice(t * perToken, rep * length), rep, length, output.Slice(t * outputStride, n));
        }
    }

    /// <summary>Rows of scratch <see cref="ScoresCausal"/> and <see cref="AccumulateCausal"/> are given.</summary>
    const int CausalRows = 256;

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
