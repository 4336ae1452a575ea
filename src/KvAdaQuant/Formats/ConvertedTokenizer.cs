using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.Model;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Formats;

/// <summary>
/// Finds the tokenizer of a model being converted and carries it into the output format, checked with
/// <see cref="TokenizerEquivalence"/> wherever it changes representation. The tokenizer is <paramref name="tokenizerPath"/>
/// when given (a <c>tokenizer.json</c>, a <c>.gguf</c> holding a vocabulary, or a llama2.c <c>tokenizer.bin</c>), otherwise the
/// model's own: a GGUF file's <c>tokenizer.*</c> keys, a Hugging Face folder's <c>tokenizer.json</c>, or the llama2.c
/// tokenizer beside a <c>.bin</c> (<c>tok{vocab}.bin</c>, <c>tokenizer.bin</c>).
/// </summary>
public static class ConvertedTokenizer
{
    /// <summary>Tokenizer files copied from a Hugging Face folder into another.</summary>
    public static IReadOnlyList<string> HfTokenizerFiles { get; } = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json"];

    /// <summary>The GGUF tokenizer keys for <paramref name="model"/>.</summary>
    public static GgufTokenizerMetadata ToGguf(LlamaModel model, string? tokenizerPath)
    {
        var c = model.Config;
        if (tokenizerPath is not null)
        {
            return FromFile(tokenizerPath, c);
        }

        switch (model.Format)
        {
            case "gguf":
                {
                    using (var g = GgufFile.Open(model.Path))
                    {
                        if (GgufTokenizerMetadata.FromGguf(g) is { } m)
                        {
                            return m;
                        }
                    }

                    var beside = ModelLoader.FindLlama2cTokenizer(model.Path, c.VocabSize)
                        ?? throw new ModelFormatException(model.Path, "the GGUF file holds no tokenizer (no tokenizer.ggml.model) and no llama2.c tokenizer lies beside it; pass --tokenizer");
                    return GgufVocabulary.FromLlama2cTokenizer(beside, c.VocabSize).ToMetadata(beside);
                }

            case "safetensors":
                {
                    var json = Path.Combine(model.Path, "tokenizer.json");
                    return File.Exists(json)
                        ? FromFile(json, c)
                        : throw new ModelFormatException(model.Path, "the Hugging Face folder has no tokenizer.json; pass --tokenizer (a tokenizer.json, a .gguf holding a vocabulary, or a llama2.c tokenizer.bin)");
                }

            default:
                {
                    var tok = ModelLoader.FindLlama2cTokenizer(model.Path, c.VocabSize)
                        ?? throw new ArgumentException($"--tokenizer: no llama2.c tokenizer (tok{c.VocabSize}.bin or tokenizer.bin) beside {model.Path}; pass one");
                    return GgufVocabulary.FromLlama2cTokenizer(tok, c.VocabSize).ToMetadata(tok);
                }
        }
    }

    /// <summary>
    /// Writes the tokenizer files of a Hugging Face folder for <paramref name="model"/> into <paramref name="dir"/>: a
    /// Hugging Face source's tokenizer files (or a <c>tokenizer.json</c> given as <paramref name="tokenizerPath"/>) copied
    /// unchanged; any other tokenizer as <c>tokenizer.json</c> and <c>tokenizer_config.json</c> written by
    /// <see cref="GgufTokenizerToHf"/> and read back to check it encodes like the original. Returns the files written.
    /// </summary>
    public static IReadOnlyList<string> WriteHfFiles(LlamaModel model, string? tokenizerPath, string dir)
    {
        var c = model.Config;
        if (tokenizerPath is not null && tokenizerPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            var tok = HfTokenizerJson.Load(tokenizerPath, c.BosToken, c.EosToken);
            CheckVocabulary(tokenizerPath, tok.VocabSize, c.VocabSize);
            File.Copy(tokenizerPath, Path.Combine(dir, "tokenizer.json"));
            return ["tokenizer.json"];
        }

        if (tokenizerPath is null && model.Format == "safetensors")
        {
            if (!File.Exists(Path.Combine(model.Path, "tokenizer.json")))
            {
                throw new ModelFormatException(model.Path, "the Hugging Face folder has no tokenizer.json; pass --tokenizer (a tokenizer.json, a .gguf holding a vocabulary, or a llama2.c tokenizer.bin)");
            }

            var copied = new List<string>();
            foreach (var name in HfTokenizerFiles.Where(n => File.Exists(Path.Combine(model.Path, n))))
            {
                File.Copy(Path.Combine(model.Path, name), Path.Combine(dir, name));
                copied.Add(name);
            }

            return copied;
        }

        var metadata = ToGguf(model, tokenizerPath);
        var original = GgufTokenizerFactory.Create(metadata);
        var jsonPath = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(jsonPath, GgufTokenizerToHf.TokenizerJson(metadata));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), GgufTokenizerToHf.TokenizerConfigJson(metadata, c.ContextLength));
        var written = HfTokenizerJson.Load(jsonPath, original.BosToken, original.EosToken);
        TokenizerEquivalence.Verify(original, written, $"{metadata.Source}: the tokenizer written as tokenizer.json");
        return ["tokenizer.json", "tokenizer_config.json"];
    }

    private static GgufTokenizerMetadata FromFile(string path, ModelConfig c)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"--tokenizer {path}: file not found", path);
        }

        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            var metadata = HfTokenizerToGguf.Convert(path, c.VocabSize, c.BosToken, c.EosToken);
            TokenizerEquivalence.Verify(HfTokenizerJson.Load(path, c.BosToken, c.EosToken), GgufTokenizerFactory.Create(metadata), $"{path}: the tokenizer carried into GGUF");
            return metadata;
        }

        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        {
            using var g = GgufFile.Open(path);
            var m = GgufTokenizerMetadata.FromGguf(g) ?? throw new ModelFormatException(path, "the GGUF file holds no tokenizer (no tokenizer.ggml.model)");
            CheckVocabulary(path, m.TokenCount, c.VocabSize);
            return m;
        }

        return GgufVocabulary.FromLlama2cTokenizer(path, c.VocabSize).ToMetadata(path);
    }

    private static void CheckVocabulary(string path, int tokens, int vocab)
    {
        if (tokens > vocab || (tokens < vocab && !path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)))
        {
            throw new ModelFormatException(path, $"tokenizer has {tokens} tokens but the model's vocabulary is {vocab}: tokenizer and model vocabularies disagree");
        }
    }
}
