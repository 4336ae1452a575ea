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

    /// <summary><see cref="AttendCausal"/> as one <see cref="Attend"/> per token, in token order.</summary>
    static void AttendEachToken(IKvLayerCache cache, int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(firstLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
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
