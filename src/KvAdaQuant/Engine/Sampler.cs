using System.Numerics.Tensors;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Engine;

/// <summary>Chooses the next token: greedy at temperature 0, else softmax(logits / T) (T finite) with optional top-k and top-p, from a seeded generator.</summary>
public sealed class Sampler
{
    private readonly float _temperature;
    private readonly int _topK;
    private readonly float _topP;
    private ulong _state;
    private float[] _probs = [];
    private int[] _index = [];

    /// <summary>Creates a sampler.</summary>
    public Sampler(float temperature = 0f, int topK = 0, float topP = 1f, ulong seed = 42)
    {
        Validate(temperature, topK, topP);
        _temperature = temperature;
        _topK = topK;
        _topP = topP;
        _state = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
    }

    /// <summary>Throws where a sampling setting is out of range: temperature finite and &gt;= 0, top-k &gt;= 0, top-p in (0, 1].</summary>
    public static void Validate(float temperature, int topK, float topP)
    {
        if (!(temperature >= 0 && float.IsFinite(temperature)))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), $"--temperature must be finite and >= 0, got {temperature}");
        }

        if (topK < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(topK), $"--top-k must be >= 0, got {topK}");
        }

        if (!(topP > 0 && topP <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(topP), $"--top-p must be in (0, 1], got {topP}");
        }
    }

    /// <summary>Index of the largest logit (first on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits) => TensorPrimitives.IndexOfMax(logits);

    /// <summary>Picks a token from <paramref name="logits"/>.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (_temperature == 0f)
        {
            return ArgMax(logits);
        }

        int n = logits.Length;
        if (_probs.Length < n)
        {
            _probs = new float[n];
            _index = new int[n];
        }

        // softmax((l - max) / T): the largest logit maps to 0 first, so a tiny T sends the others to -infinity (weight 0)
        // instead of overflowing every logit to +-infinity (whose softmax is NaN).
        var p = _probs.AsSpan(0, n);
        TensorPrimitives.Subtract(logits, TensorPrimitives.Max(logits), p);
        TensorPrimitives.Divide(p, _temperature, p);
        Kernels.SoftMax(p);
        var idx = _index.AsSpan(0, n);
        for (int i = 0; i < n; i++)
        {
            idx[i] = i;
        }

        int count = n;
        if (_topK > 0 || _topP < 1f)
        {
            var probsCopy = _probs;
            idx.Sort((a, b) => probsCopy[b].CompareTo(probsCopy[a]) is var cmp && cmp != 0 ? cmp : a.CompareTo(b));
            if (_topK > 0)
            {
                count = Math.Min(count, _topK);
            }

            if (_topP < 1f)
            {
                float cum = 0;
                for (int i = 0; i < count; i++)
                {
                    cum += p[idx[i]];
                    if (cum >= _topP)
                    {
                        count = i + 1;
                        break;
                    }
                }
            }
        }

        float total = 0;
        for (int i = 0; i < count; i++)
        {
            total += p[idx[i]];
        }

        float r = NextFloat() * total;
        float acc = 0;
        for (int i = 0; i < count; i++)
        {
            acc += p[idx[i]];
            if (r < acc)
            {
                return idx[i];
            }
        }

        return idx[count - 1];
    }

    private float NextFloat()
    {
        // xorshift64*, as in llama2.c
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return ((_state * 0x2545F4914F6CDD1DUL) >> 40) / 16777216.0f;
    }
}
