namespace KvAdaQuant.Quantization;

/// <summary>Direction along which a quantization group runs.</summary>
public enum QuantAxis
{
    /// <summary>Groups of consecutive channels within one token's head vector (the paper's code, llama.cpp).</summary>
    PerToken,

    /// <summary>Groups of consecutive tokens within one channel (KIVI's key quantization); needs whole chunks of tokens.</summary>
    PerChannel,
}
