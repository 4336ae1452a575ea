using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Model;

/// <summary>A loaded model: its shape, weights and (when found) tokenizer.</summary>
public sealed class LlamaModel : IDisposable
{
    /// <summary>Creates a model.</summary>
    public LlamaModel(string path, string format, ModelConfig config, ModelWeights weights, ITokenizer? tokenizer)
    {
        Path = path;
        Format = format;
        Config = config;
        Weights = weights;
        Tokenizer = tokenizer;
    }

    /// <summary>Where it was loaded from.</summary>
    public string Path { get; }

    /// <summary>Source format (llama2c-fp32, llama2c-q80, gguf, safetensors).</summary>
    public string Format { get; }

    /// <summary>Shape.</summary>
    public ModelConfig Config { get; }

    /// <summary>Weights.</summary>
    public ModelWeights Weights { get; }

    /// <summary>Tokenizer, or null when none came with the model.</summary>
    public ITokenizer? Tokenizer { get; set; }

    /// <summary>Parameter count (elements of all matrices and norms; a tied output is counted once).</summary>
    public long ParameterCount
    {
        get
        {
            var w = Weights;
            long n = (long)w.TokenEmbedding.Rows * w.TokenEmbedding.Cols + w.FinalNorm.Length;
            if (!ReferenceEquals(w.Output, w.TokenEmbedding))
            {
                n += (long)w.Output.Rows * w.Output.Cols;
            }

            foreach (var l in w.Layers)
            {
                foreach (var m in new[] { l.Wq, l.Wk, l.Wv, l.Wo, l.W1, l.W2, l.W3 })
                {
                    n += (long)m.Rows * m.Cols;
                }

                n += l.AttentionNorm.Length + l.FfnNorm.Length + (l.Bq?.Length ?? 0) + (l.Bk?.Length ?? 0) + (l.Bv?.Length ?? 0);
            }

            return n;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => Weights.Dispose();
}
