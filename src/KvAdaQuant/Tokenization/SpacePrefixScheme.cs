namespace KvAdaQuant.Tokenization;

/// <summary>When a BPE tokenizer adds a space in front of a text fragment.</summary>
public enum SpacePrefixScheme
{
    /// <summary>Never.</summary>
    Never,

    /// <summary>Only in front of the first fragment of the text.</summary>
    First,

    /// <summary>In front of every fragment (the start of the text and after each special token).</summary>
    Always,
}
