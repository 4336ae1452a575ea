namespace KvAdaQuant.Model;

/// <summary>Llama 3.1-style RoPE frequency scaling ("rope_type": "llama3").</summary>
public sealed record RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalContextLength);
