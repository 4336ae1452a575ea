namespace KvAdaQuant.Formats.Gguf;

/// <summary>Token types of <c>tokenizer.ggml.token_type</c>, numbered as llama.cpp numbers them.</summary>
public enum GgufTokenType
{
    /// <summary>An ordinary piece.</summary>
    Normal = 1,

    /// <summary>The unknown token.</summary>
    Unknown = 2,

    /// <summary>A control token such as BOS or EOS (prints nothing).</summary>
    Control = 3,

    /// <summary>A user-defined token.</summary>
    UserDefined = 4,

    /// <summary>An unused slot.</summary>
    Unused = 5,

    /// <summary>A byte-fallback token <c>&lt;0xXX&gt;</c>.</summary>
    Byte = 6,
}
