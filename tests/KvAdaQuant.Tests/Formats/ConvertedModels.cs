using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Formats;

/// <summary>stories260K converted to GGUF (F32, Q8_0, Q4_0) and tiny synthetic models, written once per test class into a temporary folder.</summary>
public sealed class ConvertedModels : IDisposable
{
    private readonly TempDir _dir = new();

    public ConvertedModels()
    {
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        var vocab = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, model.Config.VocabSize);
        foreach (var t in new[] { GgmlType.F32, GgmlType.Q8_0, GgmlType.Q4_0 })
        {
            GgufModelExporter.FromModel(model, vocab, t, "stories260K").Write(Stories(t), 2);
        }

        SyntheticModelWriter.Create(SyntheticModelPreset.Find("tiny-llama"), GgmlType.F32, 1).Write(TinyLlama, 2);
        SyntheticModelWriter.Create(SyntheticModelPreset.Find("tiny-qwen2"), GgmlType.F32, 1).Write(TinyQwen2, 2);
    }

    public string TinyLlama => _dir.File("tiny-llama.gguf");

    public string TinyQwen2 => _dir.File("tiny-qwen2.gguf");

    public string Stories(GgmlType type) => _dir.File($"stories260K-{type}.gguf");

    /// <summary>A fresh copy of <paramref name="source"/> with <paramref name="patch"/> applied, in the temporary folder.</summary>
    public string Patched(string source, string name, Func<byte[], byte[]> patch)
    {
        var path = _dir.File(name);
        File.WriteAllBytes(path, patch(File.ReadAllBytes(source)));
        return path;
    }

    /// <summary>Index of the first occurrence of <paramref name="text"/> (UTF-8) in <paramref name="bytes"/>.</summary>
    public static int IndexOf(byte[] bytes, string text)
    {
        var needle = System.Text.Encoding.UTF8.GetBytes(text);
        int i = bytes.AsSpan().IndexOf(needle);
        Assert.True(i >= 0, $"'{text}' not found");
        return i;
    }

    public void Dispose() => _dir.Dispose();
}
