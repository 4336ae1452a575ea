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

    /// <summary>Q2_K in most matrices, Q3_K in attn_v and ffn_down, Q6_K in the output matrix (llama.cpp's choice per tensor).</summary>
    Q2_K,

    /// <summary>Q3_K in most matrices, Q6_K in the output matrix.</summary>
    Q3_K_S,

    /// <summary>Q3_K in most matrices, Q4_K/Q5_K in attn_v, ffn_down and attn_output, Q6_K in the output matrix.</summary>
    Q3_K_M,

    /// <summary>As Q3_K_M with Q5_K in attn_v, ffn_down and attn_output.</summary>
    Q3_K_L,

    /// <summary>Q5_K in most matrices, Q6_K in the output matrix.</summary>
    Q5_K_S,

    /// <summary>Q5_K in most matrices; Q6_K in the output matrix and in attn_v and ffn_down of about half the layers.</summary>
    Q5_K_M,

    /// <summary>IQ4_NL (blocks of 32, one FP16 scale, 16 non-uniform levels) in every matrix but the output (Q6_K).</summary>
    IQ4_NL,

    /// <summary>IQ4_XS (super-blocks of 256, 6-bit scales per 32, IQ4_NL's levels) in most matrices, Q6_K in the output matrix.</summary>
    IQ4_XS,

    /// <summary>Q4_1 (blocks of 32 with a scale and a minimum) in every matrix but the output (Q6_K).</summary>
    Q4_1,

    /// <summary>Q5_1 (as Q4_1 with a fifth bit) in every matrix but the output (Q6_K).</summary>
    Q5_1,

    /// <summary>Q5_0 (blocks of 32, one FP16 scale, 5-bit values less 16) in every matrix but the output (Q6_K).</summary>
    Q5_0,
}
