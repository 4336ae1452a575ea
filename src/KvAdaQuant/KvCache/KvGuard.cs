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
                    throw new KvCacheException($"non-finite {what} value {data[i]} at position {firstPosition} + element {i}: refusing to cache it");
                }
            }
        }
    }
}
