using System.Runtime.CompilerServices;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq convert --type q4_k_m|q4_k_s|q6_k|q2_k|q3_k_s|q3_k_m|q3_k_l|q5_k_s|q5_k_m|iq4_nl|iq4_xs|q4_1|q5_1|q5_0</c>: the K-quant, IQ4 and Q4_1/Q5_1/Q5_0 file types are written by llama.cpp's own quantizer
/// (through LLamaSharp) from the F16/F32 GGUF kvaq writes first. The only door from <c>convert</c> to LLamaSharp: the
/// managed and native llama.cpp libraries load only for these types, so the other conversions run without them.
/// </summary>
internal static class LlamaCppConvertQuantizer
{
    /// <summary>The type names quantized by llama.cpp, as <c>--type</c> takes them.</summary>
    public static IReadOnlyList<string> TypeNames { get; } = ["q4_k_m", "q4_k_s", "q6_k", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q5_k_s", "q5_k_m", "iq4_nl", "iq4_xs", "q4_1", "q5_1", "q5_0"];

    /// <summary>Writes <paramref name="destination"/>: <paramref name="source"/> quantized by llama.cpp to <paramref name="typeName"/>.</summary>
    public static void Quantize(string source, string destination, string typeName, int threads)
    {
        try
        {
            QuantizeCore(source, destination, typeName, threads);
        }
        catch (FileNotFoundException e) when (e.FileName is { } f && (f.StartsWith("LLamaSharp", StringComparison.Ordinal) || f.StartsWith("KvAdaQuant.LlamaCpp", StringComparison.Ordinal)))
        {
            throw new NotSupportedException($"--type {typeName}: the llama.cpp quantizer ({f}) is not installed beside kvaq", e);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void QuantizeCore(string source, string destination, string typeName, int threads)
    {
        if (!KvAdaQuant.LlamaCpp.LlamaCppQuantizer.TryParse(typeName, out var type))
        {
            throw new ArgumentException($"--type: '{typeName}' is not a llama.cpp quantization type ({KvAdaQuant.LlamaCpp.LlamaCppQuantizer.Names})");
        }

        try
        {
            KvAdaQuant.LlamaCpp.LlamaCppQuantizer.Quantize(source, destination, type, threads);
        }
        catch (KvAdaQuant.LlamaCpp.LlamaCppException e)
        {
            throw new InvalidDataException($"--type {typeName}: {e.Message}", e);
        }
    }
}
