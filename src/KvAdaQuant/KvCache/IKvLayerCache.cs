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

    /// <summary>Copies keys of positions [start, start+count) of one KV head, as the cache would return them, into dst [count, HeadDim].</summary>
    void ReadKeys(int kvHead, int start, int count, Span<float> dst);

    /// <summary>Copies values likewise.</summary>
    void ReadValues(int kvHead, int start, int count, Span<float> dst);

    /// <summary>Forgets all positions.</summary>
    void Clear();
}
