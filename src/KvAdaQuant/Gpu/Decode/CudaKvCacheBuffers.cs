using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>The device buffers of a <see cref="GpuKvCacheLayout"/>: per layer FP16 K/V rows, or packed codes, pairs and the FP16 window.</summary>
public sealed class CudaKvCacheBuffers : IDisposable
{
    private readonly List<CudaDeviceBuffer> _all = [];

    /// <summary>Allocates every layer's buffers (throws <see cref="CudaException"/> when the device runs out of memory, freeing what it took).</summary>
    public CudaKvCacheBuffers(CudaContext context, GpuKvCacheLayout layout)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(layout);
        Layout = layout;
        long heads = (long)layout.Batch * layout.KvHeads;
        int d = layout.HeadDim;
        Layers = new Layer[layout.Layers.Count];
        try
        {
            for (int l = 0; l < layout.Layers.Count; l++)
            {
                GpuKvLayerLayout ll = layout.Layers[l];
                if (!ll.IsPacked)
                {
                    Layers[l] = new Layer(Take(context, heads * layout.Capacity * d * 2), Take(context, heads * layout.Capacity * d * 2), null, null, null, null);
                }
                else
                {
                    Layers[l] = new Layer(
                        Take(context, heads * layout.ResidualCapacity * d * 2),
                        Take(context, heads * layout.ResidualCapacity * d * 2),
                        Take(context, heads * layout.Capacity * ll.Keys!.RowBytes),
                        Take(context, heads * ll.Keys.ParamCount(layout.Capacity) * 4),
                        Take(context, heads * layout.Capacity * ll.Values!.RowBytes),
                        Take(context, heads * ll.Values.ParamCount(layout.Capacity) * 4));
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The layout.</summary>
    public GpuKvCacheLayout Layout { get; }

    /// <summary>Per-layer buffers.</summary>
    public Layer[] Layers { get; }

    /// <summary>Bytes allocated (equals <see cref="GpuKvCacheLayout.ByteCount"/>).</summary>
    public long ByteCount => _all.Sum(b => b.Length);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (CudaDeviceBuffer b in _all)
        {
            b.Dispose();
        }

        _all.Clear();
    }

    private CudaDeviceBuffer Take(CudaContext context, long bytes)
    {
        CudaDeviceBuffer b = context.Allocate(bytes);
        _all.Add(b);
        return b;
    }

    /// <summary>One layer: <see cref="Keys"/>/<see cref="Values"/> are the FP16 rows (the residual window when packed).</summary>
    public sealed record Layer(
        CudaDeviceBuffer Keys, CudaDeviceBuffer Values, CudaDeviceBuffer? KeyCodes, CudaDeviceBuffer? KeyParams, CudaDeviceBuffer? ValueCodes, CudaDeviceBuffer? ValueParams);
}
