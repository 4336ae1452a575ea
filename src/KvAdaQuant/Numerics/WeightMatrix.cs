using System.Buffers;
using System.Numerics.Tensors;

namespace KvAdaQuant.Numerics;

/// <summary>
/// A row-major weight matrix W of shape [Rows, Cols] in any supported ggml type, held in unmanaged or
/// memory-mapped memory it does not own. Products compute y = W x for each input vector x.
/// </summary>
public sealed unsafe class WeightMatrix
{
    private readonly byte* _data;

    /// <summary>Wraps <paramref name="rows"/> x <paramref name="cols"/> elements of <paramref name="type"/> at <paramref name="data"/>.</summary>
    public WeightMatrix(string name, GgmlType type, int rows, int cols, byte* data)
    {
        if (!RowDequantizer.Supports(type))
        {
            throw new NotSupportedException($"tensor '{name}': type {type} is not supported for weights");
        }

        Name = name;
        Type = type;
        Rows = rows;
        Cols = cols;
        RowByteCount = GgmlTypeInfo.ByteSize(type, cols);
        _data = data;
    }

    /// <summary>Tensor name as in the model file.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public GgmlType Type { get; }

    /// <summary>Output dimension.</summary>
    public int Rows { get; }

    /// <summary>Input dimension.</summary>
    public int Cols { get; }

    /// <summary>Bytes in one row.</summary>
    public long RowByteCount { get; }

    /// <summary>Total bytes of the matrix.</summary>
    public long ByteCount => RowByteCount * Rows;

    /// <summary>Raw bytes of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<byte> RowData(int row) => new(_data + (row * RowByteCount), checked((int)RowByteCount));

    /// <summary>Writes row <paramref name="row"/> as floats into <paramref name="dst"/> (length Cols).</summary>
    public void DequantizeRow(int row, Span<float> dst) => RowDequantizer.Dequantize(Type, RowData(row), dst[..Cols]);

    /// <summary>y[t, r] = sum_c W[r, c] x[t, c] for t in 0..n-1; x is [n, Cols], y is [n, Rows].</summary>
    public void MatMul(ReadOnlySpan<float> x, Span<float> y, int n, ParallelOptions parallel)
    {
        if (x.Length < n * Cols || y.Length < n * Rows)
        {
            throw new ArgumentException($"{Name}: buffers too small for {n} x [{Rows}, {Cols}]");
        }

        fixed (float* px = x)
        fixed (float* py = y)
        {
            MatMulCore(px, py, n, parallel);
        }
    }

    private void MatMulCore(float* px, float* py, int n, ParallelOptions parallel)
    {
        const int chunk = 16;
        int chunks = (Rows + chunk - 1) / chunk;
        int cols = Cols;
        int rows = Rows;
        nint x = (nint)px;
        nint y = (nint)py;
        Parallel.For(0, chunks, parallel, c =>
        {
            float[]? rented = Type == GgmlType.F32 ? null : ArrayPool<float>.Shared.Rent(cols);
            try
            {
                int r0 = c * chunk;
                int r1 = Math.Min(rows, r0 + chunk);
                for (int r = r0; r < r1; r++)
                {
                    ReadOnlySpan<float> w;
                    if (rented is null)
                    {
                        w = new ReadOnlySpan<float>(_data + (r * RowByteCount), cols);
                    }
                    else
                    {
                        DequantizeRow(r, rented);
                        w = rented.AsSpan(0, cols);
                    }

                    for (int t = 0; t < n; t++)
                    {
                        var xt = new ReadOnlySpan<float>((float*)x + ((long)t * cols), cols);
                        ((float*)y)[((long)t * rows) + r] = TensorPrimitives.Dot(w, xt);
                    }
                }
            }
            finally
            {
                if (rented is not null)
                {
                    ArrayPool<float>.Shared.Return(rented);
                }
            }
        });
    }
}
