using LLama;
using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// llama.cpp's own GGUF quantizer (<c>llama_model_quantize</c>, through LLamaSharp's <see cref="LLamaQuantizer"/>): turns an
/// F32/F16 (or, with requantization, an already quantized) GGUF into one of the K-quant file types users download, such
/// as Q4_K_M. The output matrix is quantized too, as llama-quantize does by default.
/// </summary>
public static class LlamaCppQuantizer
{
    /// <summary>The accepted type names, lower case, comma-separated.</summary>
    public static string Names => string.Join(", ", Enum.GetNames<LlamaCppQuantizationType>().Select(n => n.ToLowerInvariant()));

    /// <summary>Parses a type name such as <c>q4_k_m</c> (any case); false for others.</summary>
    public static bool TryParse(string name, out LlamaCppQuantizationType type)
        => Enum.TryParse(name, ignoreCase: true, out type) && Enum.IsDefined(type) && !int.TryParse(name, out _);

    /// <summary>
    /// Writes <paramref name="destination"/>, <paramref name="source"/> quantized to <paramref name="type"/> with
    /// <paramref name="threads"/> threads. Throws <see cref="LlamaCppException"/> naming the file when llama.cpp fails.
    /// </summary>
    public static void Quantize(string source, string destination, LlamaCppQuantizationType type, int threads, bool allowRequantize = true)
    {
        if (!File.Exists(source))
        {
            throw new FileNotFoundException($"llama.cpp quantizer: source model {source} does not exist", source);
        }

        if (threads < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(threads), threads, "llama.cpp quantizer: threads must be at least 1");
        }

        LlamaCppRuntime.Load();
        var ftype = type switch
        {
            LlamaCppQuantizationType.Q4_K_M => LLamaFtype.MOSTLY_Q4_K_M,
            LlamaCppQuantizationType.Q4_K_S => LLamaFtype.MOSTLY_Q4_K_S,
            LlamaCppQuantizationType.Q6_K => LLamaFtype.MOSTLY_Q6_K,
            LlamaCppQuantizationType.Q2_K => LLamaFtype.MOSTLY_Q2_K,
            LlamaCppQuantizationType.Q3_K_S => LLamaFtype.MOSTLY_Q3_K_S,
            LlamaCppQuantizationType.Q3_K_M => LLamaFtype.MOSTLY_Q3_K_M,
            LlamaCppQuantizationType.Q3_K_L => LLamaFtype.MOSTLY_Q3_K_L,
            LlamaCppQuantizationType.Q5_K_S => LLamaFtype.MOSTLY_Q5_K_S,
            LlamaCppQuantizationType.Q5_K_M => LLamaFtype.MOSTLY_Q5_K_M,
            LlamaCppQuantizationType.IQ4_NL => LLamaFtype.MOSTLY_IQ4_NL,
            LlamaCppQuantizationType.IQ4_XS => LLamaFtype.MOSTLY_IQ4_XS,
            LlamaCppQuantizationType.Q4_1 => LLamaFtype.MOSTLY_Q4_1,
            LlamaCppQuantizationType.Q5_1 => LLamaFtype.MOSTLY_Q5_1,
            LlamaCppQuantizationType.Q5_0 => LLamaFtype.MOSTLY_Q5_0,
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, $"llama.cpp quantizer: unknown type (known: {Names})"),
        };

        bool ok;
        try
        {
            ok = LLamaQuantizer.Quantize(source, destination, ftype, threads, allowRequantize, quantizeOutputTensor: true);
        }
        catch (ArgumentException e)
        {
            throw new LlamaCppException($"llama.cpp quantizer: {source} -> {type}: {e.Message}", e);
        }

        if (!ok)
        {
            throw new LlamaCppException($"llama.cpp quantizer: could not quantize {source} to {type} (llama_model_quantize failed; is it a GGUF model?)");
        }
    }
}
