using System.Text;
using LLama.Common;
using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>A GGUF file loaded by llama.cpp: its weights (memory-mapped) and its tokenizer.</summary>
public sealed class LlamaCppModel : IDisposable
{
    private readonly SafeLlamaModelHandle _handle;

    private LlamaCppModel(string path, SafeLlamaModelHandle handle)
    {
        Path = path;
        _handle = handle;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Vocabulary size.</summary>
    public int VocabSize => _handle.Vocab.Count;

    /// <summary>Beginning-of-sequence token, or -1.</summary>
    public int BosToken => _handle.Vocab.BOS is { } t ? (int)t : -1;

    /// <summary>End-of-sequence token, or -1.</summary>
    public int EosToken => _handle.Vocab.EOS is { } t ? (int)t : -1;

    /// <summary>Whether llama.cpp puts BOS first when tokenizing (the GGUF's <c>tokenizer.ggml.add_bos_token</c>).</summary>
    public bool AddsBos => _handle.Vocab.ShouldAddBOS;

    /// <summary>Number of transformer blocks (0 for a vocabulary-only file).</summary>
    public int Layers => _handle.LayerCount;

    /// <summary>Query heads.</summary>
    public int Heads => _handle.HeadCount;

    /// <summary>Key/value heads.</summary>
    public int KvHeads => _handle.KVHeadCount;

    /// <summary>Residual width.</summary>
    public int EmbeddingSize => _handle.EmbeddingSize;

    /// <summary>Training context length from the file.</summary>
    public int ContextLength => _handle.ContextSize;

    /// <summary>Bytes of all tensors.</summary>
    public long TensorBytes => (long)_handle.SizeInBytes;

    /// <summary>llama.cpp's one-line description (architecture, size, type).</summary>
    public string Description => _handle.Description;

    internal SafeLlamaModelHandle Handle => _handle;

    /// <summary>Loads <paramref name="path"/> on the CPU; <paramref name="vocabOnly"/> reads only the tokenizer.</summary>
    public static LlamaCppModel Load(string path, bool vocabOnly = false)
    {
        LlamaCppRuntime.Load();
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: GGUF file not found", path);
        }

        var p = new ModelParams(path) { GpuLayerCount = 0, VocabOnly = vocabOnly };
        LLamaModelParams native = default;
        LLama.Extensions.IModelParamsExtensions.ToLlamaModelParams(p, out native);
        try
        {
            var handle = SafeLlamaModelHandle.LoadFromFile(path, native);
            if (handle.IsInvalid)
            {
                throw new LlamaCppException($"{path}: llama.cpp could not load the model");
            }

            return new LlamaCppModel(path, handle);
        }
        catch (LLama.Exceptions.LoadWeightsFailedException e)
        {
            throw new LlamaCppException($"{path}: llama.cpp could not load the model ({e.Message})", e);
        }
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> with llama.cpp's tokenizer; <paramref name="parseSpecial"/> turns the text of
    /// special tokens (such as <c>&lt;s&gt;</c>) into those tokens instead of plain text.
    /// </summary>
    public int[] Tokenize(string text, bool addBos, bool parseSpecial = false)
    {
        var tokens = _handle.Tokenize(text, addBos, parseSpecial, Encoding.UTF8);
        var ids = new int[tokens.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = (int)tokens[i];
        }

        return ids;
    }

    /// <summary>
    /// The bytes llama.cpp prints for <paramref name="token"/> alone (<c>llama_token_to_piece</c>, no leading space
    /// stripped); <paramref name="special"/> prints control tokens as their text.
    /// </summary>
    public byte[] TokenToPiece(int token, bool special = false)
    {
        Span<byte> buffer = stackalloc byte[256];
        uint n = _handle.TokenToSpan((LLama.Native.LLamaToken)token, buffer, 0, special);
        return n <= buffer.Length ? buffer[..(int)n].ToArray() : throw new LlamaCppException($"token {token}'s piece is longer than {buffer.Length} bytes");
    }

    /// <summary>Creates an evaluation context (its own KV cache) over these weights.</summary>
    public LlamaCppContext CreateContext(LlamaCppContextOptions options) => LlamaCppContext.Create(this, options);

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();
}
