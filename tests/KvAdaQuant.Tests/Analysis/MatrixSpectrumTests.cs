using CsCheck;
using KvAdaQuant.Analysis;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>Singular values against independent computations on small matrices.</summary>
public class MatrixSpectrumTests
{
    [Fact]
    public void DiagonalMatrixHasItsAbsoluteDiagonalAsSingularValues()
    {
        // 5 x 3 with diag(-2, 7, 0.5): singular values 7, 2, 0.5.
        var a = new float[5 * 3];
        a[0] = -2f;
        a[(1 * 3) + 1] = 7f;
        a[(2 * 3) + 2] = 0.5f;
        var s = MatrixSpectrum.Compute(a, 5, 3);
        Assert.Equal([7, 2, 0.5], s.SingularValues, (x, y) => Math.Abs(x - y) < 1e-12);
        Assert.Equal(7, s.Spectral, 12);
        Assert.Equal(Math.Sqrt(4 + 49 + 0.25), s.Frobenius, 12);
    }

    [Fact]
    public void OrthogonalConstructionRecoversChosenSingularValues()
    {
        // A = U diag(s) V^T with U (6x4) and V (4x4) built from Householder reflections: exactly orthonormal columns.
        double[] sigma = [9, 4, 1.5, 0.25];
        var u = Householder(6, [0.3, -1.2, 0.7, 2.0, -0.4, 1.1], [1.5, 0.2, -0.9, 0.4, 0.6, -1.3]);
        var v = Householder(4, [1.0, -0.5, 0.25, 2.0], [0.1, 0.9, -1.4, 0.3]);
        var a = new float[6 * 4];
        for (int i = 0; i < 6; i++)
        {
            for (int j = 0; j < 4; j++)
            {
                double sum = 0;
                for (int k = 0; k < 4; k++)
                {
                    sum += u[i, k] * sigma[k] * v[j, k];
                }

                a[(i * 4) + j] = (float)sum;
            }
        }

        var s = MatrixSpectrum.Compute(a, 6, 4);
        for (int k = 0; k < 4; k++)
        {
            Assert.True(Math.Abs(s.SingularValues[k] - sigma[k]) < 1e-5 * sigma[0], $"sigma {k}: {s.SingularValues[k]} vs {sigma[k]}");
        }
    }

    [Fact]
    public void SingularValuesAreRootsOfEigenvaluesOfGramMatrix()
    {
        Gen.Int[2, 12].SelectMany(r => Gen.Int[1, 6].SelectMany(c => Gen.Float[-3f, 3f].Array[r * c].Select(d => (r, c, d))))
            .Sample(t =>
            {
                var (rows, cols, data) = t;
                var s = MatrixSpectrum.Compute(data, rows, cols);
                var eig = JacobiEigenvalues(Gram(data, rows, cols), cols).Select(e => Math.Sqrt(Math.Max(e, 0))).OrderByDescending(x => x).ToArray();
                int k = Math.Min(rows, cols);
                Assert.Equal(k, s.SingularValues.Length);
                for (int i = 0; i < k; i++)
                {
                    Assert.True(Math.Abs(s.SingularValues[i] - eig[i]) <= 1e-6 * (1 + eig[0]), $"sigma {i}: {s.SingularValues[i]} vs sqrt(eig) {eig[i]}");
                }
            }, iter: 200);
    }

    [Fact]
    public void SpectralIsLargestAndFrobeniusIsRootSumOfSquaredSingularValues()
    {
        Gen.Int[1, 20].SelectMany(r => Gen.Int[1, 10].SelectMany(c => Gen.Float[-10f, 10f].Array[r * c].Select(d => (r, c, d))))
            .Sample(t =>
            {
                var (rows, cols, data) = t;
                var s = MatrixSpectrum.Compute(data, rows, cols);
                Assert.Equal(s.SingularValues.Max(), s.Spectral);
                Assert.True(s.SingularValues.Zip(s.SingularValues.Skip(1)).All(p => p.First >= p.Second), "singular values not descending");
                double root = Math.Sqrt(s.SingularValues.Sum(x => x * x));
                Assert.True(Math.Abs(root - s.Frobenius) <= 1e-9 * (1 + s.Frobenius), $"sqrt(sum sigma^2) {root} vs Frobenius {s.Frobenius}");
            }, iter: 200);
    }

    [Fact]
    public void BadShapeIsRefusedWithTheShape()
    {
        var e = Assert.Throws<ArgumentException>(() => MatrixSpectrum.Compute(new float[5], 2, 3));
        Assert.Contains("2 x 3", e.Message);
        Assert.Throws<ArgumentException>(() => MatrixSpectrum.Compute([], 0, 3));
    }

    [Fact]
    public void ChannelPeakIsTheLargestChannelNormOverTheRootMeanSquareOne()
    {
        // Columns with norms 2, 1, 1, 1 (two rows): RMS column norm √(7/4), peak 2 / √(7/4).
        var a = new float[] { 2, 1, 0, 1, 0, 0, 1, 0 };
        Assert.Equal(2 / Math.Sqrt(7.0 / 4), MatrixSpectrum.Compute(a, 2, 4).ChannelPeak, 12);
        Assert.Equal(1, MatrixSpectrum.Compute([1, -1, 1, -1, 1, 1, 1, 1], 2, 4).ChannelPeak, 12); // equal energy
        Assert.Equal(2, MatrixSpectrum.Compute([0, 0, 3, 0, 0, 0, -4, 0], 2, 4).ChannelPeak, 12); // one channel: √cols
        Assert.Equal(1, MatrixSpectrum.Compute(new float[8], 2, 4).ChannelPeak); // all zero

        var h = new HeadSpectra([new MatrixSpectrum(1, 1, [1]) { ChannelPeak = 2 }, new MatrixSpectrum(1, 1, [1]) { ChannelPeak = 3 }]);
        Assert.Equal([2, 3], h.ChannelPeak);
        Assert.Equal(new SpreadStatistics(2.5, 2, 3), h.ChannelPeakStats);
    }

    [Fact]
    public void HeadSpectraSummariseAcrossHeads()
    {
        var h = new HeadSpectra([new MatrixSpectrum(3, 2, [2, 1]), new MatrixSpectrum(5, 4, [4, 3]), new MatrixSpectrum(1, 1, [1, 0])]);
        Assert.Equal(new SpreadStatistics(3, 1, 5), h.FrobeniusStats);
        Assert.Equal(new SpreadStatistics(7.0 / 3, 1, 4), h.SpectralStats);
        var band = h.SingularValueBand();
        Assert.Equal(new SpreadStatistics(7.0 / 3, 1, 4), band[0]);
        Assert.Equal(new SpreadStatistics(4.0 / 3, 0, 3), band[1]);
    }

    private static double[] Gram(float[] a, int rows, int cols)
    {
        var g = new double[cols * cols];
        for (int i = 0; i < cols; i++)
        {
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int r = 0; r < rows; r++)
                {
                    s += (double)a[(r * cols) + i] * a[(r * cols) + j];
                }

                g[(i * cols) + j] = s;
            }
        }

        return g;
    }

    /// <summary>Cyclic Jacobi rotations: eigenvalues of a symmetric n x n matrix (independent of MathNet).</summary>
    private static double[] JacobiEigenvalues(double[] m, int n)
    {
        var a = (double[])m.Clone();
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    off += a[(p * n) + q] * a[(p * n) + q];
                }
            }

            if (off < 1e-26)
            {
                break;
            }

            for (int p = 0; p < n; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    double apq = a[(p * n) + q];
                    if (Math.Abs(apq) < 1e-300)
                    {
                        continue;
                    }

                    double theta = (a[(q * n) + q] - a[(p * n) + p]) / (2 * apq);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt((theta * theta) + 1));
                    double c = 1 / Math.Sqrt((t * t) + 1), s = t * c;
                    for (int k = 0; k < n; k++)
                    {
                        double akp = a[(k * n) + p], akq = a[(k * n) + q];
                        a[(k * n) + p] = (c * akp) - (s * akq);
                        a[(k * n) + q] = (s * akp) + (c * akq);
                    }

                    for (int k = 0; k < n; k++)
                    {
                        double apk = a[(p * n) + k], aqk = a[(q * n) + k];
                        a[(p * n) + k] = (c * apk) - (s * aqk);
                        a[(q * n) + k] = (s * apk) + (c * aqk);
                    }
                }
            }
        }

        return Enumerable.Range(0, n).Select(i => a[(i * n) + i]).ToArray();
    }

    /// <summary>The product of two Householder reflections I - 2 w w^T / (w^T w): an n x n orthogonal matrix.</summary>
    private static double[,] Householder(int n, double[] w1, double[] w2)
    {
        double[,] Reflect(double[] w)
        {
            double ww = w.Sum(x => x * x);
            var h = new double[n, n];
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    h[i, j] = (i == j ? 1 : 0) - (2 * w[i] * w[j] / ww);
                }
            }

            return h;
        }

        var a = Reflect(w1);
        var b = Reflect(w2);
        var p = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                for (int k = 0; k < n; k++)
                {
                    p[i, j] += a[i, k] * b[k, j];
                }
            }
        }

        return p;
    }
}
