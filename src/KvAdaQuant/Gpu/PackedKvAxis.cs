namespace KvAdaQuant.Gpu;

/// <summary>Which elements share a scale and minimum in the packed GPU layout.</summary>
public enum PackedKvAxis
{
    /// <summary>Groups run along the head dimension of each token (the paper's code, llama.cpp).</summary>
    PerToken,

    /// <summary>Groups run along tokens for each channel (KIVI's keys).</summary>
    PerChannel,
}
