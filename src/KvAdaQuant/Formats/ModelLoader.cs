using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.Model;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Formats;

/// <summary>Loads a model of any supported format, with its tokenizer.</summary>
public static class ModelLoader
{
    /// <summary>
    /// Loads <paramref name="nameOrPath"/> (see <see cref="ModelPaths"/>). <paramref name="tokenizerPath"/> overrides
    /// the tokenizer; otherwise a llama2.c model takes <c>tok{vocab}.bin</c> or <c>tokenizer.bin</c> from its folder.
    /// With <paramref name="ggufTokenizer"/> false, a GGUF file loaded without <paramref name="tokenizerPath"/> gets no
    /// tokenizer (<see cref="LlamaModel.Tokenizer"/> null): its <c>tokenizer.*</c> keys are not built into one, so a
    /// tokenizer kind kvaq does not implement does not stop a caller that only copies the keys (GGUF re-quantization).
    /// </summary>
    public static LlamaModel Load(string nameOrPath, string? tokenizerPath = null, bool ggufTokenizer = true)
    {
        var path = ModelPaths.ResolveModel(nameOrPath);
        if (Directory.Exists(path))
        {
            return HfModelLoader.Load(path, tokenizerPath);
        }

        Span<byte> head = stackalloc byte[4];
        using (var fs = File.OpenRead(path))
        {
            int read = fs.ReadAtLeast(head, 4, throwOnEndOfStream: false);
            if (read < 4)
            {
                throw new ModelFormatException(path, $"file is {read} bytes long: too short to be a model");
            }
        }

        if (Gguf.GgufFile.IsGguf(head))
        {
            return LoadGguf(path, tokenizerPath, ggufTokenizer);
        }

        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        {
            throw new ModelFormatException(path, $"not a GGUF file: it starts with the bytes {Convert.ToHexString(head)}, not 'GGUF' (47475546)");
        }

        var (config, weights, format) = Llama2cLoader.Load(path);
        try
        {
            var model = new LlamaModel(path, format, config, weights, null);
            var tok = tokenizerPath ?? FindLlama2cTokenizer(path, config.VocabSize);
            if (tok is not null)
            {
                model.Tokenizer = LoadTokenizer(tok, config.VocabSize);
            }

            return model;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private static LlamaModel LoadGguf(string path, string? tokenizerPath, bool buildTokenizer)
    {
        var file = Gguf.GgufFile.Open(path);
        ModelConfig config;
        ModelWeights weights;
        try
        {
            (config, weights) = Gguf.GgufModelLoader.Load(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }

        try
        {
            var model = new LlamaModel(path, "gguf", config, weights, null);
            if (tokenizerPath is not null)
            {
                model.Tokenizer = LoadTokenizer(tokenizerPath, config.VocabSize);
            }
            else if (buildTokenizer)
            {
                model.Tokenizer = CreateGgufTokenizer(file);
                if (model.Tokenizer is null && file.GetString("tokenizer.ggml.model") is null or "llama"
                    && FindLlama2cTokenizer(path, config.VocabSize) is { } beside)
                {
                    model.Tokenizer = LoadTokenizer(beside, config.VocabSize);
                }
            }

            return model;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>The tokenizer stored in a GGUF file (<c>tokenizer.ggml.model</c> = llama / gpt2), or null when it has none.</summary>
    private static ITokenizer? CreateGgufTokenizer(Gguf.GgufFile file)
        => file.GetString("tokenizer.ggml.model") is null ? null : GgufTokenizerFactory.Create(file);

    /// <summary>
    /// Loads a tokenizer file for a model of <paramref name="vocabSize"/> tokens: a Hugging Face <c>tokenizer.json</c>,
    /// the vocabulary of a <c>.gguf</c> file, or a llama2.c <c>tokenizer.bin</c>.
    /// </summary>
    public static ITokenizer LoadTokenizer(string path, int vocabSize)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(Directory.Exists(path) ? $"{path}: is a folder, not a tokenizer file" : $"{path}: tokenizer file not found", path);
        }

        ITokenizer tokenizer;
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            tokenizer = HfTokenizerJson.Load(path);
        }
        else if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        {
            using var g = GgufFile.Open(path);
            tokenizer = GgufTokenizerFactory.Create(g);
        }
        else
        {
            return Llama2cTokenizer.Load(path, vocabSize);
        }

        if (tokenizer.VocabSize > vocabSize)
        {
            throw new ModelFormatException(path, $"tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary has only {vocabSize}: tokenizer and model vocabularies disagree");
        }

        return tokenizer;
    }

    /// <summary>The llama2.c tokenizer beside <paramref name="modelPath"/> (<c>tok{vocab}.bin</c>, then <c>tokenizer.bin</c>), or null.</summary>
    public static string? FindLlama2cTokenizer(string modelPath, int vocab)
    {
        var dir = Path.GetDirectoryName(modelPath)!;
        foreach (var name in new[] { $"tok{vocab}.bin", "tokenizer.bin" })
        {
            var p = Path.Combine(dir, name);
            if (File.Exists(p))
            {
                return p;
            }
        }

        return null;
    }
}
