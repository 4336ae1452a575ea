using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// The llama.cpp cache types closest to a kvaq cache (<c>--kv</c> or <c>--kv-plan</c>): fp32 → f32, fp16 → f16, and for a
/// quantized tensor, each of K and V on its own: 6 bits or more → q8_0, fewer → q4_0 (llama.cpp has nothing smaller).
/// llama.cpp stores every layer in one type, so a plan whose layers map to different types has no closest type.
/// </summary>
internal static class LlamaCppCacheMatch
{
    /// <summary>
    /// The types for <paramref name="plan"/>; <paramref name="option"/> (e.g. <c>--kv-plan plan.json</c>) names it in the
    /// error when its layers map to different llama.cpp types.
    /// </summary>
    public static (string K, string V) For(KvPlan plan, string option)
    {
        string Side(string side, Func<KvLayerSpec, KvSpec> pick)
        {
            var types = plan.Layers.Select(l => Closest(pick(l).Bits)).Distinct().ToArray();
            if (types.Length > 1)
            {
                throw new ArgumentException($"{option}: its {side} layers map to different llama.cpp cache types ({string.Join(", ", types)}), and llama.cpp stores every layer in one type; pass --vs-cache TYPE or K/V");
            }

            return types[0];
        }

        return (Side("K", l => l.K), Side("V", l => l.V));
    }

    /// <summary>Whether a llama.cpp type name is block-quantized (blocks of 32 values, which must divide the head size).</summary>
    public static bool IsBlockQuantized(string type) => type.Trim().ToLowerInvariant() is "q8_0" or "q8" or "q4_0" or "q4";

    /// <summary>Parses <c>--vs-cache</c>: one type for both (<c>q8_0</c>) or K/V (<c>q8_0/q4_0</c>).</summary>
    public static (string K, string V) Parse(string option)
    {
        var parts = option.Split('/', StringSplitOptions.TrimEntries);
        return parts.Length switch
        {
            1 => (parts[0], parts[0]),
            2 => (parts[0], parts[1]),
            _ => throw new ArgumentException($"--vs-cache '{option}': expected TYPE or K/V, e.g. q8_0 or q8_0/q4_0"),
        };
    }

    private static string Closest(KvBits bits) => bits switch
    {
        KvBits.Fp32 => "f32",
        KvBits.Fp16 => "f16",
        _ => bits.NominalBits() >= 6 ? "q8_0" : "q4_0",
    };
}
