using CsCheck;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Quantization;

/// <summary>
/// <see cref="KvRotation"/> and the <c>rot</c> spec option: the transform is the matrix H D / √d written out (Sylvester's
/// recursion, float64), orthogonal, and undone by its inverse; on rows with an outlier channel it cuts the per-token
/// quantization error; the option parses, prints, travels through plan files, is refused where it cannot apply, and on
/// stories3M-q80 lowers the KL of every K/V pair of the measured grid.
/// </summary>
public class KvRotationTests
{
    // H_d by Sylvester's recursion: H_1 = [1], H_2n = [[H, H], [H, -H]].
    private static int[,] Hadamard(int d)
    {
        var h = new int[1, 1];
        h[0, 0] = 1;
        for (int n = 1; n < d; n *= 2)
        {
            var next = new int[2 * n, 2 * n];
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    next[i, j] = h[i, j];
                    next[i, j + n] = h[i, j];
                    next[i + n, j] = h[i, j];
                    next[i + n, j + n] = -h[i, j];
                }
            }

            h = next;
        }

        return h;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(8)]
    [InlineData(64)]
    [InlineData(128)]
    [InlineData(256)]
    public void Rotate_is_the_written_out_matrix_and_unrotate_undoes_it(int d)
    {
        var h = Hadamard(d);
        var rng = new Random(d);
        var x = Enumerable.Range(0, 3 * d).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var y = x.ToArray();
        KvRotation.Rotate(y, d);
        for (int r = 0; r < 3; r++)
        {
            for (int i = 0; i < d; i++)
            {
                double want = 0;
                for (int j = 0; j < d; j++)
                {
                    want += h[i, j] * KvRotation.Sign(j) * (double)x[(r * d) + j];
                }

                want /= Math.Sqrt(d);
                Assert.True(Math.Abs(y[(r * d) + i] - want) < 1e-5, $"d {d}, row {r}, channel {i}: {y[(r * d) + i]} vs {want}");
            }
        }

        KvRotation.Unrotate(y, d);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.True(Math.Abs(y[i] - x[i]) < 1e-5, $"channel {i}: {y[i]} vs {x[i]}");
        }

        // Both signs occur (the diagonal is not the identity), and the signs are fixed (part of the stored format).
        Assert.Contains(-1f, Enumerable.Range(0, 64).Select(KvRotation.Sign));
        Assert.Contains(1f, Enumerable.Range(0, 64).Select(KvRotation.Sign));
    }

    [Fact]
    public void Rotation_keeps_norms_and_dot_products()
    {
        Gen.Float[-8f, 8f].Array[128].Select(Gen.Float[-8f, 8f].Array[128]).Sample(
            t =>
            {
                var (a, b) = t;
                double dot = a.Zip(b, (p, q) => (double)p * q).Sum();
                double na = Math.Sqrt(a.Sum(p => (double)p * p));
                var ra = a.ToArray();
                var rb = b.ToArray();
                KvRotation.Rotate(ra, 64);
                KvRotation.Rotate(rb, 64);
                Assert.True(Math.Abs(ra.Zip(rb, (p, q) => (double)p * q).Sum() - dot) < 1e-3 * Math.Max(1, Math.Abs(dot)));
                Assert.True(Math.Abs(Math.Sqrt(ra.Sum(p => (double)p * p)) - na) < 1e-4 * Math.Max(1, na));
            },
            iter: 200);
    }

    [Fact]
    public void An_outlier_channel_no_longer_sets_every_groups_range()
    {
        // Keys whose channel 5 is 30 times the others (RoPE'd keys of real models have such channels): per-token 4-bit
        // groups of 32 spend their range on it, the rotated rows spread it over all 64 channels.
        var rng = new Random(3);
        const int tokens = 256, d = 64;
        var keys = new float[tokens * d];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = (float)(rng.NextDouble() - 0.5) * (i % d == 5 ? 30f : 1f);
        }

        double plain = KvQuantizer.FrobeniusError(keys, tokens, d, new KvSpec(KvBits.Four));
        double rotated = KvQuantizer.FrobeniusError(keys, tokens, d, new KvSpec(KvBits.Four) { Rotate = true });
        Assert.True(rotated < plain / 2, $"rotated {rotated} vs plain {plain}");
    }

    [Fact]
    public void The_option_parses_prints_and_travels_through_plan_files()
    {
        var plan = KvPlan.Parse("k4v2:krot:g16", 2);
        Assert.True(plan.Layers[0].K.Rotate);
        Assert.False(plan.Layers[0].V.Rotate);
        Assert.Equal("4:g16:pt:asym:r0:sink0:rot", plan.Layers[0].K.ToString());
        var back = KvPlan.FromJson(plan.ToJson(), "test", "p");
        Assert.Equal(plan.Layers, back.Layers);
        Assert.Contains("\"rotate\": true", plan.ToJson(), StringComparison.Ordinal);
        Assert.DoesNotContain("rotate", KvPlan.Parse("k4v2", 1).ToJson(), StringComparison.Ordinal); // files without it stay as they were
        Assert.True(KvPlan.Parse("k16v2:rot", 1).Layers[0].V.Rotate); // an unprefixed option sets the quantized side
        Assert.False(KvPlan.Parse("k16v2:rot", 1).Layers[0].K.Rotate);

        Assert.Contains("options 'rot' and 'rot' both set the rotation of K and V", Assert.Throws<ArgumentException>(() => KvPlan.Parse("k4v2:rot:rot", 1)).Message);
        Assert.Contains("option 'krot' sets K, which is fp16 (unquantized)", Assert.Throws<ArgumentException>(() => KvPlan.Parse("k16v2:krot", 1)).Message);
        var odd = Assert.Throws<ArgumentException>(() => KvPlan.Parse("k4v2:rot", 1).Validate(1, 48));
        Assert.Equal("--kv 'k4v2:rot': k.rot needs a head dimension that is a power of two (the Walsh-Hadamard rotation), the model has 48", odd.Message);
        Assert.Contains("must be true or false", Assert.Throws<ArgumentException>(() => KvPlan.FromJson("""{"layers": [{"k": {"bits": 4, "rotate": 1}, "v": {"bits": 2}}]}""", "f.json", "f")).Message);
        Assert.Contains("rotate applies only to quantized bits", Assert.Throws<ArgumentException>(() => KvPlan.FromJson("""{"layers": [{"k": {"bits": "fp16", "rotate": true}, "v": {"bits": 2}}]}""", "f.json", "f")).Message);
    }

    [Fact]
    public void On_stories3M_rotation_lowers_the_kl_of_each_pair_of_the_grid()
    {
        // kvaq eval --task kl --data sampled --ctx 256 --limit 2 on k2v2, k4v2, k4v4, with and without rot.
        using var m = ModelLoader.Load("stories3M-q80");
        using var transformer = new Transformer(m, 2);
        var evaluator = new TaskEvaluator(transformer, m.Tokenizer!, new EvaluationOptions { Task = "kl", Data = "sampled", Context = 256, Limit = 2 });
        foreach (var kv in new[] { "k2v2", "k4v2", "k4v4" })
        {
            double plain = evaluator.Evaluate(l => KvCacheFactory.Create(kv, l)).Metrics["mean_kl"];
            double rotated = evaluator.Evaluate(l => KvCacheFactory.Create(kv + ":rot", l)).Metrics["mean_kl"];
            Assert.True(rotated < plain, $"{kv}: mean KL {rotated} rotated vs {plain}");
        }
    }
}
