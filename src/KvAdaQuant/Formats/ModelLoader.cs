using KvAdaQuant.Model;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Formats;

/// <summary>Loads a model of any supported format, with its tokenizer.</summary>
public static class ModelLoader
{
    /// <summary>
    /// Loads <paramref name="nameOrPath"/> (see <see cref="ModelPaths"/>). <paramref name="tokenizerPath"/> overrides
    /// the tokenizer; otherwise a llama2.c model takes <c>tok{vocab}.bin</c> or <c>tokenizer.bin</c> from its folder.
    /// </summary>
    public static LlamaModel Load(string nameOrPath, string? tokenizerPath = null)
    {
        var path = ModelPaths.ResolveModel(nameOrPath);
        if (Directory.Exists(path))
        {
            throw new ModelFormatException(path, "Hugging Face folders (config.json + safetensors) are not supported yet");
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

    /// <summary>Loads a tokenizer file for a model of <paramref name="vocabSize"/> tokens.</summary>
    public static ITokenizer LoadTokenizer(string path, int vocabSize)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        }

        return Llama2cTokenizer.Load(path, vocabSize);
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
