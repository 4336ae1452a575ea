namespace KvAdaQuant.KvCache;

/// <summary>A KV cache refused an operation (overflow, non-finite values, bad plan).</summary>
public sealed class KvCacheException : Exception
{
    /// <summary>Creates the error.</summary>
    public KvCacheException(string message)
        : base(message)
    {
    }
}
