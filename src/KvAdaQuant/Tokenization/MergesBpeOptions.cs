namespace KvAdaQuant.Tokenization;

/// <summary>How a <see cref="MergesBpeTokenizer"/> prepares text and which special ids it uses.</summary>
public sealed record MergesBpeOptions
{
    /// <summary>UTF-8 bytes are mapped to printable characters (GPT-2 byte level).</summary>
    public bool ByteLevel { get; init; }

    /// <summary>Spaces are written as U+2581 (SentencePiece style).</summary>
    public bool EscapeSpaces { get; init; }

    /// <summary>When a space is put in front of a text fragment.</summary>
    public SpacePrefixScheme SpacePrefix { get; init; }

    /// <summary>Splits text into words, or null to treat each fragment as one word.</summary>
    public BpePreTokenizer? PreTokenizer { get; init; }

    /// <summary>A word that is itself a token is emitted whole, without merging (llama.cpp's ignore_merges, HF's ignore_merges).</summary>
    public bool IgnoreMerges { get; init; }

    /// <summary>Symbols that are not tokens become <c>&lt;0xXX&gt;</c> byte tokens.</summary>
    public bool ByteFallback { get; init; }

    /// <summary>Unknown-token id, or -1.</summary>
    public int Unknown { get; init; } = -1;

    /// <summary>BOS id, or -1.</summary>
    public int Bos { get; init; } = -1;

    /// <summary>EOS id, or -1.</summary>
    public int Eos { get; init; } = -1;

    /// <summary>Special tokens that swallow whitespace on their left.</summary>
    public ISet<int>? LStrip { get; init; }

    /// <summary>Special tokens that swallow whitespace on their right.</summary>
    public ISet<int>? RStrip { get; init; }
}
