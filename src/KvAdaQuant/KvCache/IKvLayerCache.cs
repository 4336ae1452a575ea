namespace KvAdaQuant.KvCache;

/// <summary>
/// One layer's KV cache. The engine appends the K and V rows of new positions and asks for attention
/// of a query group against the first <c>length</c> cached positions; how the rows are stored is the
/// cache's business.
/// </summary>
public interface IKvLayerCache
{
    /// <summary>Positions held.</summary>
    int Length { get; }

    /// <summary>Bytes of storage in use for the positions held (data, scales, zero points, full-precision windows).</summary>
    long ByteCount { get; }

    /// <summary>
    /// Appends <paramref name="tokens"/> positions. <paramref name="keys"/> and <paramref name="values"/> are
    /// [tokens, KvHeads * HeadDim], keys after RoPE. Throws <see cref="KvCacheException"/> on NaN/Inf or overflow.
    /// </summary>
    void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens);

    /// <summary>
    /// Attention of <paramref name="queryHeads"/> query heads (all served by KV head <paramref name="kvHead"/>,
    /// contiguous in <paramref name="queries"/>, each HeadDim long) over positions 0..length-1: softmax(q k^T * scale) V.
    /// <paramref name="scores"/> is scratch of at least queryHeads * length floats.
    /// </summary>
    void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores);

    /// <summary>
    /// Causal attention of <paramref name="tokens"/> consecutive query positions (a prefill batch): token t's
    /// <paramref name="queryHeads"/> heads, at queries[t * <paramref name="queryStride"/>..], attend positions
    /// 0..<paramref name="firstLength"/> + t - 1, and their output goes to output[t * <paramref name="outputStride"/>..].
    /// The same bits as one <see cref="Attend"/> per token (which is what this default does); a cache may share work
    /// between the tokens. <paramref name="scratch"/> holds at least <see cref="CausalScratchFloats"/> floats.
    /// </summary>
    void AttendCausal(int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch) =>
        AttendEachToken(this, kvHead, queries, queryStride, queryHeads, firstLength, tokens, output, outputStride, scratch);

    /// <summary>Scratch floats <see cref="AttendCausal"/> needs for these arguments (by default the scores of the longest token).</summary>
    int CausalScratchFloats(int queryHeads, int firstLength, int tokens) => queryHeads * (firstLength + tokens - 1);

    /// <summary>
    /// Checks <see cref="AttendCausal"/>'s counts against a cache of <paramref name="length"/> positions and returns the
    /// positions the batch's last token attends.
    /// </summary>
    internal static int CheckCausal(int length, int firstLength, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(firstLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        int last = firstLength + tokens - 1;
        if (last > length)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), $"the batch's last token attends {last} positions but the cache holds {length}");
        }

        return last;
    }

    /// <summary>
    /// Checks the buffers of a shared <see cref="AttendCausal"/>: <paramref name="span"/> (query heads x head dim) floats
    /// per token at the two strides, and <paramref name="need"/> floats of scratch.
    /// </summary>
    internal static void CheckCausalBuffers(int queries, int queryStride, int output, int outputStride, int span, int tokens, int scratch, int need)
    {
        if (scratch < need)
        {
            throw new ArgumentException($"scratch of {scratch} floats, need {need}", nameof(scratch));
        }

        if (queries < ((tokens - 1) * queryStride) + span || output < ((tokens - 1) * outputStride) + span)
        {
            throw new ArgumentException($"{tokens} tokens of {span} floats at strides {queryStride} / {outputStride} need more than {queries} query and {output} output floats");
        }
    }

    /// <summary>
    /// Most score floats a shared <see cref="AttendCausal"/> holds at once (2 MiB): every token's scores over every
    /// position wait for the softmax, so at 32k positions a block of 16 tokens of 4 heads would hold 8 MiB a thread.
    /// </summary>
    internal const int MaxSharedScoreFloats = 1 << 19;

    /// <summary>
    /// Tokens a shared <see cref="AttendCausal"/> attends at a time: as many as keep their scores (tokens x
    /// <paramref name="queryHeads"/> x <paramref name="last"/> positions) within <see cref="MaxSharedScoreFloats"/>, at least one.
    /// </summary>
    internal static int SharedTokens(int queryHeads, int last, int tokens) =>
        (int)Math.Clamp(MaxSharedScoreFloats / Math.Max(1L, (long)queryHeads * last), 1, tokens);

    /// <summary>
    /// <see cref="AttendCausal"/> of <paramref name="cache"/> in parts of <paramref name="part"/> tokens, each a causal batch
    /// of its own (the same bits: every token's output is its own <see cref="Attend"/>'s), with the same scratch.
    /// </summary>
    internal static void AttendInParts(IKvLayerCache cache, int part, int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        for (int t0 = 0; t0 < tokens; t0 += part)
        {
            cache.AttendCausal(kvHead, queries[(t0 * queryStride)..], queryStride, queryHeads, firstLength + t0, Math.Min(part, tokens - t0), output[(t0 * outputStride)..], outputStride, scratch);
        }
    }

    /// <summary><see cref="AttendCausal"/> as one <see cref="Attend"/> per token, in token order.</summary>
    static void AttendEachToken(IKvLayerCache cache, int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        CheckCausal(cache.Length, firstLength, tokens);
        for (int t = 0; t < tokens; t++)
        {
            int n = queryHeads * (firstLength + t);
            var q = queries[(t * queryStride)..];
            var o = output[(t * outputStride)..];
            cache.Attend(kvHead, q[..Math.Min(q.Length, queryStride)], queryHeads, firstLength + t, o[..Math.Min(o.Length, outputStride)], scratch[..n]);
        }
    }

    /// <summary>Copies keys of positions [start, start+count) of one KV head, as the cache would return them, into dst [count, HeadDim].</summary>
    void ReadKeys(int kvHead, int start, int count, Span<float> dst);

    /// <summary>Copies values likewise.</summary>
    void ReadValues(int kvHead, int start, int count, Span<float> dst);

    /// <summary>Forgets all positions.</summary>
    void Clear();
}
