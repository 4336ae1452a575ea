namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// File types llama.cpp's quantizer writes (its <c>llama-quantize</c> names). K-quant types need rows that are a multiple
/// of 256 elements; llama.cpp gives other matrices a fallback type (Q5_0, Q5_1 or Q8_0).
/// </summary>
public enum LlamaCppQuantizationType
{
    /// <summary>Q4_K in most matrices; Q6_K in the output matrix and in attn_v and ffn_down of about half the layers.</summary>
    Q4_K_M,

    /// <summary>Q4_K in most matrices, a few Q5_K; Q6_K in the output matrix.</summary>
    Q4_K_S,

    /// <summary>Q6_K in every matrix.</summary>
    Q6_K,
}
