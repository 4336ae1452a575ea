using System.Runtime.Intrinsics.X86;
using KvAdaQuant.LlamaCpp;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>The llama.cpp reference harness itself: native library, tokenizer, guards.</summary>
public class LlamaCppHarnessTests
{
    [LlamaCppFact]
    public void NativeLibrary_Loads_TheBestVariantForThisCpu()
    {
        var info = LlamaCppRuntime.Load();
        Assert.EndsWith("libllama.so", info.LibraryPath);
        string expected = Avx512F.IsSupported ? "avx512" : Avx2.IsSupported ? "avx2" : Avx.IsSupported ? "avx" : "noavx";
        Assert.Equal(expected, info.Variant);
        Assert.Contains("CPU", info.SystemInfo);
    }

    [LlamaCppTheory]
    [InlineData("ggml-vocab-llama-spm.gguf")]
    [InlineData("ggml-vocab-gpt-2.gguf")]
    public void Tokenize_VocabOnlyGguf_MatchesLlamaCppTestVectors(string file)
    {
        var path = Fixtures.Path("tokenizers", "llama.cpp-vocab", file);
        using var model = LlamaCppModel.Load(path, vocabOnly: true);
        Assert.Equal(0, model.Layers);
        var cases = LlamaCppVocabTestFile.Read(path);
        Assert.True(cases.Count > 20, $"only {cases.Count} test vectors read");
        foreach (var (text, ids) in cases)
        {
            // llama.cpp's test-tokenizer-0 tokenizes without BOS and with special-token parsing on.
            Assert.Equal(ids, model.Tokenize(text, addBos: false, parseSpecial: true));
        }
    }

    [LlamaCppFact]
    public void Tokenize_AddBos_PutsBosFirst()
    {
        using var model = LlamaCppModel.Load(Fixtures.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"), vocabOnly: true);
        var ids = model.Tokenize("Hello world", addBos: true);
        Assert.Equal(model.BosToken, ids[0]);
        Assert.Equal(model.Tokenize("Hello world", addBos: false), ids[1..]);
    }

    [LlamaCppFact]
    public void CreateContext_QuantizedVWithoutFlashAttention_IsRefusedWithReason()
    {
        using var model = LlamaCppModel.Load(Fixtures.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"), vocabOnly: true);
        var e = Assert.Throws<ArgumentException>(() => model.CreateContext(new LlamaCppContextOptions
        {
            ContextSize = 64,
            TypeK = LlamaCppCacheType.Q8_0,
            TypeV = LlamaCppCacheType.Q4_0,
            FlashAttention = false,
        }));
        Assert.Contains("flash attention", e.Message);
        Assert.Contains("q4_0", e.Message);
    }

    [Fact]
    public void ContextOptions_QuantizedV_DefaultsToFlashAttention()
    {
        Assert.True(new LlamaCppContextOptions { ContextSize = 8, TypeV = LlamaCppCacheType.Q8_0 }.EffectiveFlashAttention);
        Assert.False(new LlamaCppContextOptions { ContextSize = 8, TypeK = LlamaCppCacheType.Q8_0, TypeV = LlamaCppCacheType.F32 }.EffectiveFlashAttention);
    }

    [LlamaCppFact]
    public void CreateContext_VocabOnlyFile_SaysItCannotEvaluate()
    {
        var path = Fixtures.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf");
        using var model = LlamaCppModel.Load(path, vocabOnly: true);
        var e = Assert.Throws<LlamaCppException>(() => model.CreateContext(new LlamaCppContextOptions { ContextSize = 64 }));
        Assert.Contains(path, e.Message);
        Assert.Contains("vocabulary only", e.Message);
    }

    [LlamaCppFact]
    public void Load_MissingFile_NamesIt()
    {
        var e = Assert.Throws<FileNotFoundException>(() => LlamaCppModel.Load("/nonexistent/model.gguf"));
        Assert.Contains("/nonexistent/model.gguf", e.Message);
    }

    [Theory]
    [InlineData("q8_0", LlamaCppCacheType.Q8_0)]
    [InlineData("F16", LlamaCppCacheType.F16)]
    [InlineData("q4_0", LlamaCppCacheType.Q4_0)]
    public void CacheTypes_ParseAndCountBytes(string text, LlamaCppCacheType expected)
    {
        Assert.Equal(expected, LlamaCppCacheTypes.Parse(text, "--vs-cache"));
        long bytes = LlamaCppCacheTypes.ByteCount(expected, 64);
        Assert.Equal(expected switch { LlamaCppCacheType.Q8_0 => 68L, LlamaCppCacheType.Q4_0 => 36L, _ => 128L }, bytes);
        var e = Assert.Throws<ArgumentException>(() => LlamaCppCacheTypes.Parse("q5_1", "--vs-cache"));
        Assert.Contains("--vs-cache", e.Message);
    }
}
