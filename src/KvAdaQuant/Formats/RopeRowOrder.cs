using KvAdaQuant.Model;

namespace KvAdaQuant.Formats;

/// <summary>
/// Carries the rows of a Q or K projection (and of its bias) from one RoPE layout to another, head by head, so that the
/// model computes the same function. Within a head of <c>d</c> rows, interleaved RoPE rotates rows (2i, 2i+1) and
/// half-split RoPE rows (i, i + d/2): half-split to interleaved puts row i at 2i and row i + d/2 at 2i + 1 (what
/// llama.cpp's convert_hf_to_gguf does to Hugging Face q_proj/k_proj for GGUF architecture <c>llama</c>, reshaping each
/// head to (2, d/2) and swapping the axes); interleaved to half-split is the inverse.
/// </summary>
public static class RopeRowOrder
{
    /// <summary>
    /// For each destination row, the source row it takes, for <paramref name="heads"/> heads of <paramref name="headDim"/>
    /// rows; null when the layouts are the same (rows stay in place).
    /// </summary>
    public static int[]? Between(RopeLayout from, RopeLayout to, int heads, int headDim)
    {
        if (from == to)
        {
            return null;
        }

        if (headDim <= 0 || headDim % 2 != 0 || heads <= 0)
        {
            throw new ArgumentException($"RoPE row order needs positive heads and an even head size, got {heads} heads of {headDim}");
        }

        int half = headDim / 2;
        var order = new int[heads * headDim];
        for (int h = 0; h < heads; h++)
        {
            int b = h * headDim;
            for (int i = 0; i < half; i++)
            {
                if (to == RopeLayout.Interleaved)
                {
                    order[b + (2 * i)] = b + i;
                    order[b + (2 * i) + 1] = b + i + half;
                }
                else
                {
                    order[b + i] = b + (2 * i);
                    order[b + i + half] = b + (2 * i) + 1;
                }
            }
        }

        return order;
    }

    /// <summary><paramref name="values"/> reordered by <paramref name="order"/> (a copy; the values themselves when order is null).</summary>
    public static float[] Apply(float[] values, int[]? order)
    {
        if (order is null)
        {
            return values;
        }

        if (order.Length != values.Length)
        {
            throw new ArgumentException($"row order of {order.Length} rows for a vector of {values.Length}");
        }

        var result = new float[values.Length];
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = values[order[i]];
        }

        return result;
    }
}
