using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>The fixture models converted to GGUF by our writer, once per test class, in a temporary folder.</summary>
public sealed class ConvertedModels : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Dictionary<string, string> _files = [];
    private readonly Lock _lock = new();

    /// <summary>The llama2.c model <paramref name="name"/> (stories260K, stories3M-q80) as GGUF of <paramref name="type"/>.</summary>
    public string Get(string name, GgmlType type)
    {
        lock (_lock)
        {
            var key = $"{name}-{type}";
            if (!_files.TryGetValue(key, out var path))
            {
                path = _dir.File(key + ".gguf");
                using var model = ModelLoader.Load(name);
                var tokPath = ModelLoader.FindLlama2cTokenizer(model.Path, model.Config.VocabSize)!;
                var vocab = GgufVocabulary.FromLlama2cTokenizer(tokPath, model.Config.VocabSize);
                GgufModelExporter.FromModel(model, vocab, type, name).Write(path, threads: 2);
                _files[key] = path;
            }

            return path;
        }
    }

    /// <summary>The synthetic preset <paramref name="preset"/> as GGUF of <paramref name="type"/>.</summary>
    public string GetSynthetic(string preset, GgmlType type)
    {
        lock (_lock)
        {
            var key = $"{preset}-{type}";
            if (!_files.TryGetValue(key, out var path))
            {
                path = _dir.File(key + ".gguf");
                SyntheticModelWriter.Create(SyntheticModelPreset.Find(preset), type, seed: 7).Write(path, threads: 2);
                _files[key] = path;
            }

            return path;
        }
    }

    /// <summary>
    /// <paramref name="source"/> (a file from <see cref="Get"/> or <see cref="GetSynthetic"/>) quantized by llama.cpp's own
    /// quantizer to <paramref name="type"/>.
    /// </summary>
    public string GetLlamaCppQuantized(string source, LlamaCppQuantizationType type)
    {
        lock (_lock)
        {
            var key = $"{Path.GetFileNameWithoutExtension(source)}-llama.cpp-{type}";
            if (!_files.TryGetValue(key, out var path))
            {
                path = _dir.File(key + ".gguf");
                LlamaCppQuantizer.Quantize(source, path, type, threads: 2);
                _files[key] = path;
            }

            return path;
        }
    }

    public void Dispose() => _dir.Dispose();
}
