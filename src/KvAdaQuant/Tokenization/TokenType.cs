namespace KvAdaQuant.Tokenization;

/// <summary>Token types as stored in GGUF <c>tokenizer.ggml.token_type</c> (SentencePiece's piece types).</summary>
public enum TokenType
{
    /// <summary>Not given.</summary>
    Undefined = 0,

    /// <summary>An ordinary piece of text.</summary>
    Normal = 1,

    /// <summary>The unknown token (<c>&lt;unk&gt;</c>).</summary>
    Unknown = 2,

    /// <summary>A control token such as BOS or EOS: never produced from plain text, prints nothing.</summary>
    Control = 3,

    /// <summary>A user-defined token: always matched whole in the input, printed as its text.</summary>
    UserDefined = 4,

    /// <summary>An unused slot.</summary>
    Unused = 5,

    /// <summary>A byte-fallback token <c>&lt;0xXX&gt;</c>.</summary>
    Byte = 6,
}
