using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Formats;

/// <summary>Encodes <paramref name="values"/> (whole rows) into exactly <paramref name="destination"/>.</summary>
internal delegate void RowEncoder(ReadOnlySpan<float> values, Span<byte> destination);

/// <summary>
/// Streams tensors to a file for the GGUF and safetensors writers: rows come from a <see cref="GgufRowSource"/> in chunks
/// of about a million elements, a batch of chunks is produced and encoded in parallel, and the chunks are written in
/// order, so a tensor of any size needs a few megabytes per thread. The buffers are reused from tensor to tensor.
/// </summary>
internal sealed class RowStreamer
{
    /// <summary>Elements per chunk; rows longer than this are refused by the writers.</summary>
    public const int ChunkElements = 1 << 20;

    private readonly ParallelOptions _parallel;
    private readonly float[][] _floats;
    private readonly byte[][] _bytes;

    /// <summary>Creates buffers for <paramref name="threads"/> workers (at least 1).</summary>
    public RowStreamer(int threads)
    {
        threads = Math.Max(1, threads);
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = threads };
        int batch = Math.Max(2, threads * 2);
        _floats = new float[batch][];
        _bytes = new byte[batch][];
    }

    /// <summary>
    /// Writes <paramref name="rows"/> rows of <paramref name="cols"/> elements from <paramref name="source"/>, each encoded
    /// to <paramref name="rowBytes"/> bytes by <paramref name="encode"/>; <paramref name="written"/> gets the bytes of each batch.
    /// </summary>
    public void Write(Stream stream, long rows, int cols, long rowBytes, GgufRowSource source, RowEncoder encode, Action<long>? written = null)
    {
        int rowsPerChunk = (int)Math.Max(1, Math.Min(rows, ChunkElements / cols));
        long chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        int batch = _floats.Length;
        for (long c0 = 0; c0 < chunks; c0 += batch)
        {
            int n = (int)Math.Min(batch, chunks - c0);
            Parallel.For(0, n, _parallel, i =>
            {
                long first = (c0 + i) * rowsPerChunk;
                int count = (int)Math.Min(rowsPerChunk, rows - first);
                var f = _floats[i] ??= new float[ChunkElements];
                var b = _bytes[i] ??= new byte[ChunkElements * sizeof(float)];
                var values = f.AsSpan(0, count * cols);
                source(first, count, values);
                encode(values, b.AsSpan(0, (int)(count * rowBytes)));
            });
            long bytes = 0;
            for (int i = 0; i < n; i++)
            {
                long first = (c0 + i) * rowsPerChunk;
                int count = (int)Math.Min(rowsPerChunk, rows - first);
                stream.Write(_bytes[i], 0, (int)(count * rowBytes));
                bytes += count * rowBytes;
            }

            written?.Invoke(bytes);
        }
    }
}
