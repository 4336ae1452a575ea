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

    /// <summary>
    /// Whether <see cref="ScoresCausal"/> and <see cref="AccumulateCausal"/> share work between a batch's tokens with
    /// the bits of one <see cref="Scores"/> / <see cref="Accumulate"/> per token (by default where <see cref="AttendsReadRows"/>).
    /// </summary>
    bool SharesCausal(int rep) => AttendsReadRows(rep);

    /// <summary>
    /// <see cref="Scores"/> for a batch: token t's <paramref name="rep"/> heads (queries[t * rep * HeadDim..]) over positions
    /// 0..firstLength + t - 1, into scores[t * perToken + r * (firstLength + t) + j]. <paramref name="rows"/> is scratch of
    /// <see cref="CausalRows"/> rows. By default: <see cref="Read"/> a chunk at a time, <c>MultiDotRows</c> per token.
    /// </summary>
    void ScoresCausal(int kvHead, ReadOnlySpan<float> queries, int rep, int headDim, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows) =>
        ScoreReadRows(this, kvHead, queries, rep, headDim, firstLength, tokens, scores, perToken, rows, 0, firstLength + tokens - 1);

    /// <summary>
    /// <see cref="Accumulate"/> for a batch: output[t * outputStride + r * HeadDim..] += the token's weights (laid out as
    /// <see cref="ScoresCausal"/> writes scores) times the rows. By default: <see cref="Read"/> a chunk at a time,
    /// <c>MultiAxpyRows</c> per token, in position order.
    /// </summary>
    void AccumulateCausal(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int headDim, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows) =>
        AccumulateReadRows(this, kvHead, probs, perToken, rep, headDim, firstLength, tokens, output, outputStride, rows, 0, firstLength + tokens - 1);

    /// <summary>Rows of scratch the causal methods read at a time.</summary>
    const int CausalRows = 256;

    /// <summary>The default <see cref="ScoresCausal"/> over positions [from, to) only (each token up to its own length).</summary>
    static void ScoreReadRows(IKvTensorStore store, int kvHead, ReadOnlySpan<float> queries, int rep, int hd, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, int from, int to)
    {
        int n = rep * hd;
        for (int c0 = from; c0 < to; c0 += CausalRows)
        {
            int m = Math.Min(CausalRows, to - c0);
            store.Read(kvHead, c0, m, rows[..(m * hd)]);
            for (int t = 0; t < tokens; t++)
            {
                int end = Math.Min(firstLength + t - c0, m);
                Numerics.AttentionKernels.MultiDotRows(queries.Slice(t * n, n), rep, hd, rows, end, scores.Slice(t * perToken, perToken), firstLength + t, c0);
            }
        }
    }

    /// <summary>The default <see cref="AccumulateCausal"/> over positions [from, to) only.</summary>
    static void AccumulateReadRows(IKvTensorStore store, int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int hd, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, int from, int to)
    {
        int n = rep * hd;
        for (int c0 = from; c0 < to; c0 += CausalRows)
        {
            int m = Math.Min(CausalRows, to - c0);
            store.Read(kvHead, c0, m, rows[..(m * hd)]);
            for (int t = 0; t < tokens; t++)
            {
                int end = Math.Min(firstLength + t - c0, m);
                Numerics.AttentionKernels.MultiAxpyRows(probs.Slice(t * perToken, perToken), rep, hd, rows, end, output.Slice(t * outputStride, n), firstLength + t, c0);
            }
        }
    }

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
