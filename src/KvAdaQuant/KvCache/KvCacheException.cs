namespace KvAdaQuant.KvCache;

/// <summary>A KV cache refused an operation (overflow, non-finite values, bad plan).</summary>
public class KvCacheException : Exception
{
    /// <summary>Creates the error.</summary>
    public KvCacheException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the error with the one that caused it.</summary>
    public KvCacheException(string message, Exception inner)
        : base(message, inner)
    {
    }
}

/// <summary>
/// A KV cache refused a K or V value it cannot hold (NaN, infinity, or beyond an FP16 store's range): the model's weights
/// or the activations before that layer went wrong. The engine adds the model file and the layer to the message.
/// </summary>
public sealed class KvValueException : KvCacheException
{
    /// <summary>Creates the error.</summary>
    public KvValueException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the error with the one that caused it.</summary>
    public KvValueException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
