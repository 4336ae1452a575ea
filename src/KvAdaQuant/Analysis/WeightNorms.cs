using KvAdaQuant.Numerics;

namespace KvAdaQuant.Analysis;

/// <summary>Norms of a projection matrix (W_K or W_V): the whole matrix and each KV head's slice of rows.</summary>
public sealed class WeightNorms
{
    /// <summary>Creates the record.</summary>
    public WeightNorms(MatrixSpectrum whole, IReadOnlyList<MatrixSpectrum> heads)
    {
        Whole = whole;
        Frobenius = heads.Select(h => h.Frobenius).ToArray();
        Spectral = heads.Select(h => h.Spectral).ToArray();
    }

    /// <summary>Frobenius norm of the whole matrix.</summary>
    public double WholeFrobenius => Whole.Frobenius;

    /// <summary>Spectral norm of the whole matrix.</summary>
    public double WholeSpectral => Whole.Spectral;

    /// <summary>Singular values of the whole matrix, descending.</summary>
    public double[] SingularValues => Whole.SingularValues;

    /// <summary>Frobenius norm of each KV head's rows [head * headDim, (head + 1) * headDim).</summary>
    public double[] Frobenius { get; }

    /// <summary>Spectral norm of each KV head's rows.</summary>
    public double[] Spectral { get; }

    private MatrixSpectrum Whole { get; }

    /// <summary>
    /// Dequantizes <paramref name="matrix"/> ([kvHeads * headDim, dim], one row per output) and decomposes it whole
    /// and per KV head slice.
    /// </summary>
    public static WeightNorms Compute(WeightMatrix matrix, int kvHeads, int headDim)
    {
        if (matrix.Rows != kvHeads * headDim)
        {
            throw new ArgumentException($"{matrix.Name}: {matrix.Rows} rows, expected {kvHeads} KV heads x {headDim}");
        }

        var data = new float[(long)matrix.Rows * matrix.Cols];
        for (int r = 0; r < matrix.Rows; r++)
        {
            matrix.DequantizeRow(r, data.AsSpan(r * matrix.Cols, matrix.Cols));
        }

        var whole = MatrixSpectrum.Compute(data, matrix.Rows, matrix.Cols);
        var heads = new MatrixSpectrum[kvHeads];
        int slice = headDim * matrix.Cols;
        for (int g = 0; g < kvHeads; g++)
        {
            heads[g] = MatrixSpectrum.Compute(data.AsSpan(g * slice, slice), headDim, matrix.Cols);
        }

        return new WeightNorms(whole, heads);
    }
}
