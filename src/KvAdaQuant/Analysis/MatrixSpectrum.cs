using MathNet.Numerics.LinearAlgebra;

namespace KvAdaQuant.Analysis;

/// <summary>The singular values of one matrix (descending) with its spectral and Frobenius norms.</summary>
public sealed record MatrixSpectrum(double Frobenius, double Spectral, double[] SingularValues)
{
    /// <summary>
    /// The largest channel's share of the matrix's energy as a ratio: max over columns c of ||A[:, c]||₂ over the root mean
    /// square of the column norms, √(||A||²_F / cols). 1 when every channel carries the same energy, √cols when one carries
    /// all of it. A per-token quantization group's range follows its largest channel, so this is what makes one tensor
    /// harder to quantize per token than another of the same norm (and what a rotation, <c>rot</c>, evens out).
    /// </summary>
    public double ChannelPeak { get; init; } = 1;

    /// <summary>
    /// Decomposes the row-major <paramref name="rows"/> x <paramref name="cols"/> matrix in <paramref name="data"/>
    /// (MathNet.Numerics SVD in float64). The spectral norm is the largest singular value; the Frobenius norm is
    /// summed directly from the entries (it equals the root of the sum of squared singular values).
    /// </summary>
    public static MatrixSpectrum Compute(ReadOnlySpan<float> data, int rows, int cols)
    {
        if (rows <= 0 || cols <= 0)
        {
            throw new ArgumentException($"matrix shape must be positive, got {rows} x {cols}");
        }

        if (data.Length < (long)rows * cols)
        {
            throw new ArgumentException($"matrix data holds {data.Length} values, need {rows} x {cols}");
        }

        var m = Matrix<double>.Build.Dense(rows, cols);
        double sumSq = 0;
        var channel = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            var row = data.Slice(r * cols, cols);
            for (int c = 0; c < cols; c++)
            {
                double x = row[c];
                m[r, c] = x;
                sumSq += x * x;
                channel[c] += x * x;
            }
        }

        double peak = sumSq > 0 ? Math.Sqrt(channel.Max() / (sumSq / cols)) : 1;

        var s = m.Svd(computeVectors: false).S.ToArray();
        Array.Sort(s);
        Array.Reverse(s);
        return new MatrixSpectrum(Math.Sqrt(sumSq), s.Length > 0 ? s[0] : 0, s) { ChannelPeak = peak };
    }
}
