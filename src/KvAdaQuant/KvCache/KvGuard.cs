using System.Numerics.Tensors;

namespace KvAdaQuant.KvCache;

/// <summary>Checks rows entering a cache.</summary>
internal static class KvGuard
{
    /// <summary>Throws when <paramref name="data"/> holds NaN or infinity.</summary>
    public static void CheckFinite(ReadOnlySpan<float> data, string what, int firstPosition)
    {
        // Sum of x*0 is NaN exactly when some x is NaN or infinite.
        if (!float.IsFinite(TensorPrimitives.Sum(data)) || float.IsNaN(TensorPrimitives.SumOfSquares(data) * 0f))
        {
            for (int i = 0; i < data.Length; i++)
            {
                if (!float.IsFinite(data[i]))
                {
                    throw new KvValueException($"non-finite {what} value {data[i]} at position {firstPosition} + element {i}: refusing to cache it");
                }
            }
        }
    }

    /// <summary>Throws when <paramref name="data"/> holds a magnitude an FP16 store or an FP16 scale cannot hold.</summary>
    public static void CheckHalfRange(ReadOnlySpan<float> data, string what, int firstPosition)
    {
        if (data.Length > 0 && TensorPrimitives.MaxMagnitude(data) > 65504f)
        {
            for (int i = 0; i < data.Length; i++)
            {
                if (MathF.Abs(data[i]) > 65504f)
                {
                    throw new KvValueException($"{what} value {data[i]} at position {firstPosition} + element {i} is beyond the FP16 range (65504) of this cache: refusing to cache it");
                }
            }
        }
    }
}
