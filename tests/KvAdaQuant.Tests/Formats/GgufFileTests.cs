using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Tests.Formats;

public class GgufFileTests
{
    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf", "llama", 32000)]
    [InlineData("ggml-vocab-gpt-2.gguf", "gpt2", 50257)]
    public void ReadsLlamaCppVocabularyFiles(string file, string model, int vocab)
    {
        using var g = GgufFile.Open(Fixtures.Path("tokenizers", "llama.cpp-vocab", file));
        Assert.Equal(3u, g.Version);
        Assert.Equal(model, g.GetString("tokenizer.ggml.model"));
        Assert.Equal(vocab, ((string[])g.Get("tokenizer.ggml.tokens")!).Length);
        Assert.Empty(g.Tensors);
    }

    [Fact]
    public void WrongMagicIsRejected()
    {
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(Fixtures.Stories260K).Dispose());
        Assert.Contains("not a GGUF file", e.Message);
        Assert.Contains("stories260K.bin", e.Message);
    }

    [Fact]
    public void TruncatedMetadataIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"));
        var path = dir.File("cut.gguf");
        File.WriteAllBytes(path, bytes[..5000]);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.Contains("cut.gguf", e.Message);
        Assert.Contains("past the end of the file", e.Message);
    }

    [Fact]
    public void ForgedCountsAreRejectedWithoutAllocating()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"));
        BitConverter.GetBytes(ulong.MaxValue / 2).CopyTo(bytes, 16); // metadata count
        var path = dir.File("forged.gguf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.Contains("more than a", e.Message);
    }
}
