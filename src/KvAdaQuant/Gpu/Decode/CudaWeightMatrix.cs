using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>A weight matrix resident on the GPU in a <see cref="GpuWeightType"/> layout (several model matrices may be stacked by rows).</summary>
internal sealed class CudaWeightMatrix : IDisposable
{
    private CudaWeightMatrix(GpuWeightType type, int rows, int cols, CudaDeviceBuffer codes, CudaDeviceBuffer scales)
    {
        Type = type;
        Rows = rows;
        Cols = cols;
        Codes = codes;
        Scales = scales;
    }

    public GpuWeightType Type { get; }

    public int Rows { get; }

    public int Cols { get; }

    public int LeadingDimension => GpuWeightPacker.LeadingDimension(Type, Cols);

    public CudaDeviceBuffer Codes { get; }

    public CudaDeviceBuffer Scales { get; }

    public long ByteCount => GpuWeightPacker.ByteCount(Type, Rows, Cols);

    /// <summary>Packs <paramref name="parts"/> (same column count) stacked by rows and copies them to the device in chunks.</summary>
    public static CudaWeightMatrix Upload(CudaContext context, IReadOnlyList<WeightMatrix> parts, bool keepQuantized)
    {
        int cols = parts[0].Cols;
        if (parts.Any(p => p.Cols != cols))
        {
            throw new ArgumentException($"tensors {string.Join(", ", parts.Select(p => p.Name))}: column counts differ, cannot stack them.", nameof(parts));
        }

        GpuWeightType type = GpuWeightPacker.TargetType(parts, keepQuantized);
        int rows = parts.Sum(p => p.Rows);
        int rowCode = GpuWeightPacker.RowCodeBytes(type, cols);
        int rowScales = GpuWeightPacker.RowScales(type, cols);
        CudaDeviceBuffer codes = context.Allocate(Math.Max(4, (long)rows * rowCode));
        CudaDeviceBuffer scales = context.Allocate(Math.Max(4, (long)rows * rowScales * 2));
        int chunkRows = Math.Max(1, (int)Math.Min(rows, (64L << 20) / Math.Max(1, rowCode)));
        var codeStage = new byte[(long)chunkRows * rowCode];
        var scaleStage = new ushort[Math.Max(1, chunkRows * rowScales)];
        int done = 0;
        foreach (WeightMatrix part in parts)
        {
            for (int r0 = 0; r0 < part.Rows; r0 += chunkRows)
            {
                int n = Math.Min(chunkRows, part.Rows - r0);
                Parallel.For(
                    0,
                    n,
                    () => new float[cols],
                    (i, _, scratch) =>
                    {
                        GpuWeightPacker.PackRow(
                            part, r0 + i, type, codeStage.AsSpan(i * rowCode, rowCode), scaleStage.AsSpan(i * rowScales, rowScales), scratch);
                        return scratch;
                    },
                    _ => { });
                codes.CopyFrom<byte>(codeStage.AsSpan(0, n * rowCode), (long)(done + r0) * rowCode);
                if (rowScales > 0)
                {
                    scales.CopyFrom<ushort>(scaleStage.AsSpan(0, n * rowScales), (long)(done + r0) * rowScales * 2);
                }
            }

            done += part.Rows;
        }

        return new CudaWeightMatrix(type, rows, cols, codes, scales);
    }

    public void Dispose()
    {
        Codes.Dispose();
        Scales.Dispose();
    }
}
