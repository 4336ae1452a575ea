namespace KvAdaQuant.Model;

/// <summary>How RoPE pairs up the dimensions of a head.</summary>
public enum RopeLayout
{
    /// <summary>Adjacent pairs (2i, 2i+1): llama2.c and GGUF architecture <c>llama</c>.</summary>
    Interleaved,

    /// <summary>Pairs (i, i + d/2): Hugging Face / GPT-NeoX, GGUF <c>qwen2</c>.</summary>
    HalfSplit,
}
