using System.Diagnostics;
using System.Numerics.Tensors;
using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Analysis;

/// <summary>
/// Runs the KV analysis of a model on calibration tokens: captures K (before and after RoPE) and V of every
/// layer and KV head, decomposes them, measures the W_K / W_V norms, the quantization error per bit width and
/// the error that only-K or only-V quantization carries through the layers to the output.
/// </summary>
public sealed class KvAnalyzer
{
    /// <summary>Stage names reported through progress.</summary>
    public const string CaptureStage = "capture", SpectraStage = "decompose", WeightsStage = "weights", QuantizeStage = "quantize", PropagateStage = "propagate";

    private readonly Transformer _transformer;

    /// <summary>Creates an analyzer over <paramref name="transformer"/>.</summary>
    public KvAnalyzer(Transformer transformer)
    {
        _transformer = transformer;
    }

    /// <summary>Positions per forward call.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>
    /// Analyses <paramref name="tokens"/>. Quantization error and error propagation are measured for every width in
    /// <paramref name="bits"/> when <paramref name="probe"/> is given; otherwise only spectra and norms.
    /// </summary>
    public KvAnalysis Run(IReadOnlyList<int> tokens, string data, IReadOnlyList<KvBits> bits, IKvQuantizationProbe? probe, IProgress<AnalysisProgress>? progress = null)
    {
        var c = _transformer.Config;
        if (tokens.Count == 0)
        {
            throw new ArgumentException("no calibration tokens");
        }

        if (tokens.Count > c.ContextLength)
        {
            throw new ArgumentException($"--tokens: {tokens.Count} calibration tokens exceed the model's context of {c.ContextLength}");
        }

        foreach (var b in bits)
        {
            if (!b.IsQuantized())
            {
                throw new ArgumentException($"--kv-bits: {b.Name()} is not a quantized width (expected {KvBitsInfo.Accepted} without fp16/fp32)");
            }
        }

        var sw = Stopwatch.StartNew();
        int n = tokens.Count;
        var layout = _transformer.CacheLayout(n);
        var reference = new ForwardCapture(c, n);
        var refLogits = new float[(long)n * c.VocabSize];
        progress?.Report(new AnalysisProgress(CaptureStage, 0, 1));
        using (var cache = new FullPrecisionKvCache(layout, half: false))
        {
            Forward(tokens, cache, reference, refLogits);
        }

        progress?.Report(new AnalysisProgress(CaptureStage, 1, 1));

        var layers = new LayerAnalysis[c.Layers];
        int totalSvd = c.Layers * c.KvHeads * 3;
        int done = 0;
        var spectra = new HeadSpectra[c.Layers, 3];
        for (int l = 0; l < c.Layers; l++)
        {
            foreach (var kind in new[] { KvTensorKind.Keys, KvTensorKind.KeysPreRope, KvTensorKind.Values })
            {
                var heads = new MatrixSpectrum[c.KvHeads];
                for (int g = 0; g < c.KvHeads; g++)
                {
                    heads[g] = MatrixSpectrum.Compute(reference.Head(l, kind, g), n, c.HeadDim);
                    progress?.Report(new AnalysisProgress(SpectraStage, ++done, totalSvd));
                }

                spectra[l, (int)kind] = new HeadSpectra(heads);
            }
        }

        var weights = new (WeightNorms K, WeightNorms V)[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            var lw = _transformer.Model.Weights.Layers[l];
            weights[l] = (WeightNorms.Compute(lw.Wk, c.KvHeads, c.HeadDim), WeightNorms.Compute(lw.Wv, c.KvHeads, c.HeadDim));
            progress?.Report(new AnalysisProgress(WeightsStage, l + 1, c.Layers));
        }

        var quant = new List<QuantizationError>[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            quant[l] = [];
        }

        var propagation = new List<PropagationRun>();
        if (probe is not null && bits.Count > 0)
        {
            done = 0;
            foreach (var b in bits)
            {
                for (int l = 0; l < c.Layers; l++)
                {
                    quant[l].Add(new QuantizationError(b.NominalBits(), RoundTripError(reference, l, KvTensorKind.Keys, b, probe), RoundTripError(reference, l, KvTensorKind.Values, b, probe)));
                    progress?.Report(new AnalysisProgress(QuantizeStage, ++done, bits.Count * c.Layers));
                }
            }

            done = 0;
            foreach (var b in bits)
            {
                foreach (bool keys in new[] { true, false })
                {
                    propagation.Add(Propagate(tokens, layout, reference, refLogits, b, keys, probe));
                    progress?.Report(new AnalysisProgress(PropagateStage, ++done, bits.Count * 2));
                }
            }
        }

        for (int l = 0; l < c.Layers; l++)
        {
            layers[l] = new LayerAnalysis
            {
                Layer = l,
                K = spectra[l, (int)KvTensorKind.Keys],
                KPreRope = spectra[l, (int)KvTensorKind.KeysPreRope],
                V = spectra[l, (int)KvTensorKind.Values],
                WK = weights[l].K,
                WV = weights[l].V,
                Quantization = quant[l],
            };
        }

        var m = _transformer.Model;
        return new KvAnalysis
        {
            Model = new AnalysisModelInfo(m.Path, m.Format, c.Layers, c.Heads, c.KvHeads, c.HeadDim, c.Dim, c.VocabSize),
            Data = data,
            Tokens = n,
            TokenIds = tokens.ToArray(),
            Bits = probe is null ? [] : bits.Select(b => b.NominalBits()).ToArray(),
            Schemes = probe is null ? [] : bits.Select(probe.Describe).ToArray(),
            Layers = layers,
            Propagation = propagation,
            Seconds = sw.Elapsed.TotalSeconds,
        };
    }

    /// <summary>||a - b||_F / ||b||_F (0 when both are zero, infinity when only b is).</summary>
    public static double RelativeError(ReadOnlySpan<float> a, ReadOnlySpan<float> reference)
    {
        double num = 0, den = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            double d = (double)a[i] - reference[i];
            num += d * d;
            den += (double)reference[i] * reference[i];
        }

        return num == 0 ? 0 : Math.Sqrt(num / den);
    }

    /// <summary>KL(p || q) of the softmax distributions of two logit rows, in nats.</summary>
    public static double KlDivergence(ReadOnlySpan<float> referenceLogits, ReadOnlySpan<float> logits)
    {
        double LogSumExp(ReadOnlySpan<float> x)
        {
            double max = TensorPrimitives.Max(x);
            double s = 0;
            foreach (float v in x)
            {
                s += Math.Exp(v - max);
            }

            return max + Math.Log(s);
        }

        double lp = LogSumExp(referenceLogits), lq = LogSumExp(logits);
        double kl = 0;
        for (int i = 0; i < referenceLogits.Length; i++)
        {
            double logP = referenceLogits[i] - lp;
            kl += Math.Exp(logP) * (logP - (logits[i] - lq));
        }

        return Math.Max(kl, 0);
    }

    private void Forward(IReadOnlyList<int> tokens, IKvCache cache, ForwardCapture capture, float[] logits)
    {
        int vocab = _transformer.Config.VocabSize;
        var ids = tokens.ToArray();
        for (int p = 0; p < ids.Length; p += BatchSize)
        {
            int count = Math.Min(BatchSize, ids.Length - p);
            _transformer.Forward(ids.AsSpan(p, count), p, cache, logits.AsSpan(p * vocab, count * vocab), allLogits: true, capture);
        }
    }

    private double RoundTripError(ForwardCapture reference, int layer, KvTensorKind kind, KvBits bits, IKvQuantizationProbe probe)
    {
        var c = reference.Config;
        int n = reference.Length;
        double num = 0, den = 0;
        var q = new float[n * c.HeadDim];
        for (int g = 0; g < c.KvHeads; g++)
        {
            var a = reference.Head(layer, kind, g);
            probe.RoundTrip(kind != KvTensorKind.Values, bits, a, n, c.HeadDim, q);
            for (int i = 0; i < a.Length; i++)
            {
                double d = (double)q[i] - a[i];
                num += d * d;
                den += (double)a[i] * a[i];
            }
        }

        return num == 0 ? 0 : Math.Sqrt(num / den);
    }

    private PropagationRun Propagate(IReadOnlyList<int> tokens, KvLayout layout, ForwardCapture reference, float[] refLogits, KvBits bits, bool keys, IKvQuantizationProbe probe)
    {
        var c = _transformer.Config;
        int n = tokens.Count, vocab = c.VocabSize;
        var capture = new ForwardCapture(c, n, keysAndValues: false);
        var logits = new float[(long)n * vocab];
        try
        {
            using var cache = probe.CreateCache(layout, keys ? bits : null, keys ? null : bits);
            Forward(tokens, cache, capture, logits);
        }
        catch (KvCacheException e)
        {
            var nan = Enumerable.Repeat(double.NaN, c.Layers).ToArray();
            return new PropagationRun
            {
                Bits = bits.NominalBits(),
                Quantized = keys ? "k" : "v",
                Scheme = probe.Describe(bits),
                AttentionError = nan,
                ResidualError = nan,
                KlMean = double.NaN,
                KlLast = double.NaN,
                Top1Agreement = double.NaN,
                Failure = e.Message,
            };
        }

        var att = new double[c.Layers];
        var res = new double[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            att[l] = RelativeError(capture.Attention(l), reference.Attention(l));
            res[l] = RelativeError(capture.Residual(l), reference.Residual(l));
        }

        double klSum = 0, klLast = 0;
        int agree = 0;
        for (int t = 0; t < n; t++)
        {
            var p = refLogits.AsSpan(t * vocab, vocab);
            var q = logits.AsSpan(t * vocab, vocab);
            double kl = KlDivergence(p, q);
            klSum += kl;
            klLast = kl;
            agree += TensorPrimitives.IndexOfMax(p) == TensorPrimitives.IndexOfMax(q) ? 1 : 0;
        }

        return new PropagationRun
        {
            Bits = bits.NominalBits(),
            Quantized = keys ? "k" : "v",
            Scheme = probe.Describe(bits),
            AttentionError = att,
            ResidualError = res,
            KlMean = klSum / n,
            KlLast = klLast,
            Top1Agreement = (double)agree / n,
        };
    }
}
