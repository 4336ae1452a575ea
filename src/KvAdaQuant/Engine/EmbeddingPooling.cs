namespace KvAdaQuant.Engine;

/// <summary>How a sequence's final hidden states become one embedding (llama.cpp's <c>--pooling</c> names).</summary>
public enum EmbeddingPooling
{
    /// <summary>The mean over every position (BOS included).</summary>
    Mean,

    /// <summary>The last position's.</summary>
    Last,

    /// <summary>The first position's (the BOS's).</summary>
    Cls,
}
