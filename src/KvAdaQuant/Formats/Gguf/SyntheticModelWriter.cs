using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// Writes a <see cref="SyntheticModelPreset"/> as GGUF with seeded random weights. Every row of every tensor
/// is drawn from its own xoshiro256** stream seeded from (seed, tensor name, row), so the file is the same
/// whatever the thread count or chunking. Matrices are uniform with standard deviation 1/sqrt(ne[0])
/// (fan-in scaling keeps activations near unit size through any number of layers), norm weights
/// 1 ± 0.1, biases uniform with standard deviation 0.1. The vocabulary is <see cref="GgufVocabulary.Synthetic"/>.
/// </summary>
public static class SyntheticModelWriter
{
    /// <summary>Builds the writer for <paramref name="preset"/> with matrices in <paramref name="type"/>.</summary>
    public static GgufWriter Create(SyntheticModelPreset preset, GgmlType type, ulong seed)
    {
        var vocab = GgufVocabulary.Synthetic(preset.Config.VocabSize);
        return GgufModelExporter.Create(preset.Config, vocab, type, (name, shape) => Source(name, shape, seed), preset.QkvBias, null, $"synthetic {preset.Name} seed {seed}");
    }

    private static GgufRowSource Source(string name, long[] shape, ulong seed)
    {
        ulong tensorSeed = seed;
        foreach (char ch in name)
        {
            tensorSeed = Mix(tensorSeed ^ ch);
        }

        int cols = (int)shape[0];
        float center, halfWidth;
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            (center, halfWidth) = (1f, 0.1f);
        }
        else if (name.EndsWith(".bias", StringComparison.Ordinal))
        {
            (center, halfWidth) = (0f, 0.1f * MathF.Sqrt(3f));
        }
        else
        {
            (center, halfWidth) = (0f, MathF.Sqrt(3f / cols));
        }

        return (first, count, dst) =>
        {
            for (int r = 0; r < count; r++)
            {
                Fill(Mix(tensorSeed ^ Mix((ulong)(first + r))), dst.Slice(r * cols, cols), center, halfWidth);
            }
        };
    }

    private static void Fill(ulong seed, Span<float> dst, float center, float halfWidth)
    {
        ulong s0 = Mix(seed), s1 = Mix(s0), s2 = Mix(s1), s3 = Mix(s2);
        const float scale = 2f / (1 << 24);
        int i = 0;
        while (i < dst.Length)
        {
            // xoshiro256**
            ulong result = BitRotateLeft(s1 * 5, 7) * 9;
            ulong t = s1 << 17;
            s2 ^= s0;
            s3 ^= s1;
            s1 ^= s2;
            s0 ^= s3;
            s2 ^= t;
            s3 = BitRotateLeft(s3, 45);
            dst[i++] = center + (halfWidth * (((result >> 40) * scale) - 1f));
            if (i < dst.Length)
            {
                dst[i++] = center + (halfWidth * ((((result >> 8) & 0xFFFFFF) * scale) - 1f));
            }
        }
    }

    private static ulong BitRotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    // SplitMix64 finalizer.
    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
