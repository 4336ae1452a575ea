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

    /// <summary>Pointer to the first byte of row <paramref name="row"/>.</summary>
    public byte* RowPointer(int row) => _data + (row * RowByteCount);
}
