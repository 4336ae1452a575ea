namespace KvAdaQuant.Model;

/// <summary>Hyper-parameters of a Llama-family decoder.</summary>
public sealed record ModelConfig
{
    /// <summary>Architecture name (llama, qwen2, mistral, ...).</summary>
    public string Architecture { get; init; } = "llama";

    /// <summary>Model (residual stream) width.</summary>
    public required int Dim { get; init; }

    /// <summary>Feed-forward inner width.</summary>
    public required int HiddenDim { get; init; }

    /// <summary>Number of transformer blocks.</summary>
    public required int Layers { get; init; }

    /// <summary>Number of query heads.</summary>
    public required int Heads { get; init; }

    /// <summary>Number of key/value heads (GQA when fewer than <see cref="Heads"/>).</summary>
    public required int KvHeads { get; init; }

    /// <summary>Size of one head; Dim / Heads unless a file says otherwise.</summary>
    public int HeadDim { get; init; }

    /// <summary>Vocabulary size.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Maximum sequence length the model was trained for.</summary>
    public required int ContextLength { get; init; }

    /// <summary>RMSNorm epsilon.</summary>
    public float NormEps { get; init; } = 1e-5f;

    /// <summary>RoPE base.</summary>
    public float RopeTheta { get; init; } = 10000f;

    /// <summary>RoPE pairing.</summary>
    public RopeLayout RopeLayout { get; init; } = RopeLayout.Interleaved;

    /// <summary>Optional Llama 3 frequency scaling.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>Whether the output projection is the token embedding.</summary>
    public bool TiedEmbeddings { get; init; }

    /// <summary>Beginning-of-sequence token id.</summary>
    public int BosToken { get; init; } = 1;

    /// <summary>End-of-sequence token id.</summary>
    public int EosToken { get; init; } = 2;

    /// <summary>Query heads per KV head.</summary>
    public int GroupSize => Heads / KvHeads;

    /// <summary>Width of all KV heads of one layer.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Width of all query heads of one layer.</summary>
    public int QDim => Heads * HeadDim;

    /// <summary>Bytes of an FP16 KV cache per token (K and V, all layers).</summary>
    public long Fp16KvBytesPerToken => 2L * 2 * Layers * KvDim;

    /// <summary>Checks the shape is consistent; throws naming <paramref name="source"/> and the field.</summary>
    public void Validate(string source)
    {
        void Check(bool ok, string what)
        {
            if (!ok)
            {
                throw new Formats.ModelFormatException(source, what);
            }
        }

        Check(Dim is > 0 and <= 1 << 16, $"dim must be in 1..65536, found {Dim}");
        Check(HiddenDim is > 0 and <= 1 << 18, $"hidden_dim must be in 1..262144, found {HiddenDim}");
        Check(Layers is > 0 and <= 1024, $"n_layers must be in 1..1024, found {Layers}");
        Check(Heads is > 0 and <= 1024, $"n_heads must be in 1..1024, found {Heads}");
        Check(KvHeads > 0 && KvHeads <= Heads && Heads % KvHeads == 0, $"n_kv_heads must divide n_heads ({Heads}), found {KvHeads}");
        Check(HeadDim > 0 && HeadDim % 2 == 0 && HeadDim <= 1024, $"head_dim must be even and in 2..1024, found {HeadDim}");
        Check(VocabSize is > 0 and <= 1 << 22, $"vocab_size must be in 1..4194304, found {VocabSize}");
        Check(ContextLength is > 0 and <= 1 << 24, $"max sequence length must be in 1..16777216, found {ContextLength}");
        Check(NormEps > 0 && NormEps < 1, $"norm epsilon must be in (0, 1), found {NormEps}");
        Check(RopeTheta > 0, $"rope theta must be positive, found {RopeTheta}");
        if (RopeScaling is { } s)
        {
            // Outside these the Llama 3 frequency factors mean nothing; a factor of 0 makes every rotated key NaN.
            Check(float.IsFinite(s.Factor) && s.Factor > 0, $"rope scaling factor must be positive, found {s.Factor}");
            Check(
                float.IsFinite(s.HighFreqFactor) && s.LowFreqFactor > 0 && s.HighFreqFactor > s.LowFreqFactor,
                $"rope scaling low_freq_factor {s.LowFreqFactor} and high_freq_factor {s.HighFreqFactor} must be positive, high above low");
            Check(s.OriginalContextLength > 0, $"rope scaling original context length must be positive, found {s.OriginalContextLength}");
        }
    }
}
