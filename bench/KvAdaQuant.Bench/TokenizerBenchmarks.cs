using BenchmarkDotNet.Attributes;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Bench;

/// <summary>Encoding the first 100,000 characters of WikiText-2 (test) with each tokenizer; Microsoft.ML.Tokenizers' LlamaTokenizer for comparison.</summary>
[MemoryDiagnoser]
public class TokenizerBenchmarks
{
    private string _text = null!;
    private ITokenizer _spm = null!;
    private ITokenizer _gpt2 = null!;
    private ITokenizer _llama2c = null!;
    private Microsoft.ML.Tokenizers.LlamaTokenizer _ml = null!;

    [GlobalSetup]
    public void Setup()
    {
        var root = ModelPaths.FixturesRoot() ?? throw new InvalidOperationException("fixtures not found; set KVAQ_FIXTURES");
        _text = File.ReadAllText(Path.Combine(root, "data", "wikitext-2", "wiki.test.raw"))[..100_000];
        using (var g = GgufFile.Open(Path.Combine(root, "tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf")))
        {
            _spm = GgufTokenizerFactory.Create(g);
        }

        using (var g = GgufFile.Open(Path.Combine(root, "tokenizers", "llama.cpp-vocab", "ggml-vocab-gpt-2.gguf")))
        {
            _gpt2 = GgufTokenizerFactory.Create(g);
        }

        _llama2c = Llama2cTokenizer.Load(Path.Combine(root, "tokenizers", "llama2-32k", "tokenizer.bin"), 32000);
        using var model = File.OpenRead(Path.Combine(root, "tokenizers", "llama2-32k", "tokenizer.model"));
        _ml = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(model);
    }

    [Benchmark(Baseline = true, Description = "GGUF llama (SentencePiece BPE)")]
    public int GgufSpm() => _spm.Encode(_text, addBos: true).Count;

    [Benchmark(Description = "GGUF gpt2 (byte-level BPE)")]
    public int GgufGpt2() => _gpt2.Encode(_text, addBos: false).Count;

    [Benchmark(Description = "llama2.c tokenizer.bin")]
    public int Llama2c() => _llama2c.Encode(_text, addBos: true).Count;

    [Benchmark(Description = "Microsoft.ML.Tokenizers LlamaTokenizer")]
    public int MicrosoftMl() => _ml.EncodeToIds(_text).Count;
}
