namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Where the positions of a packed GPU cache are: <see cref="Quantized"/> packed rows, then <see cref="Residual"/> FP16
/// window rows. Before a position is appended, a full window (window + chunk rows) gives its oldest chunk to the packed
/// rows (<see cref="NeedsFlush"/>, <see cref="Flush"/>); so with chunk 1 and window w the packed rows after an append are
/// exactly the CPU cache's with residual w + 1, and with a chunk of 32 the packed count stays a multiple of 32.
/// </summary>
internal struct GpuKvWindow
{
    /// <summary>Packed positions.</summary>
    public int Quantized { get; private set; }

    /// <summary>FP16 window rows.</summary>
    public int Residual { get; private set; }

    /// <summary>All positions.</summary>
    public readonly int Length => Quantized + Residual;

    /// <summary>The state of a cache holding <paramref name="positions"/> positions (as if appended one by one).</summary>
    public static GpuKvWindow At(int positions, int window, int chunk)
    {
        // The window is flushed lazily (before the next append), so after an append it holds window + 1 .. window + chunk rows.
        int residual = positions <= window + chunk ? positions : window + ((positions - window - 1) % chunk) + 1;
        return new GpuKvWindow { Quantized = positions - residual, Residual = residual };
    }

    /// <summary>Whether the window is full, so its oldest chunk must be quantized before the next append.</summary>
    public readonly bool NeedsFlush(int window, int chunk) => Residual == window + chunk;

    /// <summary>Moves the oldest <paramref name="chunk"/> window rows to the packed rows.</summary>
    public void Flush(int chunk)
    {
        Quantized += chunk;
        Residual -= chunk;
    }

    /// <summary>Counts one appended window row.</summary>
    public void Append() => Residual++;

    /// <summary>Counts <paramref name="rows"/> window rows appended at once (a prefill chunk; the window must hold them).</summary>
    public void Append(int rows) => Residual += rows;
}
