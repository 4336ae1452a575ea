using System.Text.Json;
using KvAdaQuant.Tokenization;
using Microsoft.ML.Tokenizers;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>
/// The Llama 2 32k vocabulary three ways: llama2.c's tokenizer.bin (<see cref="Llama2cTokenizer"/>), llama.cpp's
/// llama-spm GGUF vocabulary (<see cref="SentencePieceBpeTokenizer"/>), and SentencePiece's own tokenizer.model read
/// by Microsoft.ML.Tokenizers' LlamaTokenizer, on real text from ../shared/data.
/// </summary>
public class Llama2VocabularyTests
{
    private static List<string> SampleTexts()
    {
        var texts = new List<string>();
        var wiki = File.ReadAllLines(Fixtures.Path("data", "wikitext-2", "wiki.test.raw")).Where(l => l.Trim().Length > 0).Take(60);
        texts.AddRange(wiki);
        foreach (var line in File.ReadLines(Fixtures.Path("data", "gsm8k", "test.jsonl")).Take(20))
        {
            using var doc = JsonDocument.Parse(line);
            texts.Add(doc.RootElement.GetProperty("question").GetString()!);
        }

        foreach (var line in File.ReadLines(Fixtures.Path("data", "c4", "c4_validation_sample.jsonl")).Take(10))
        {
            using var doc = JsonDocument.Parse(line);
            var t = doc.RootElement.GetProperty("text").GetString()!;
            texts.Add(t.Length > 2000 ? t[..2000] : t);
        }

        texts.Add("Zoë says 你好 🙂 — naïve café, “quotes” and\ttabs\n\nnew lines   spaces.");
        return texts;
    }

    [Fact]
    public void GgufSpmAndLlama2cTokenizerBinAgreeOnRealText()
    {
        var spm = LlamaCppVocabTests.Load("ggml-vocab-llama-spm.gguf");
        var bin = Llama2cTokenizer.Load(Fixtures.Path("tokenizers", "llama2-32k", "tokenizer.bin"), 32000);
        int tokens = 0;
        foreach (var text in SampleTexts())
        {
            var a = spm.Encode(text, addBos: true);
            Assert.Equal(a, bin.Encode(text, addBos: true));
            Assert.Equal(text, spm.Decode(a));
            tokens += a.Count;
        }

        Assert.True(tokens > 5000, $"only {tokens} tokens compared");
    }

    [Fact]
    public void GgufSpmAgreesWithMicrosoftMlLlamaTokenizerOnRealText()
    {
        var spm = LlamaCppVocabTests.Load("ggml-vocab-llama-spm.gguf");
        using var model = File.OpenRead(Fixtures.Path("tokenizers", "llama2-32k", "tokenizer.model"));
        var ml = LlamaTokenizer.Create(model, addBeginOfSentence: true, addEndOfSentence: false);
        foreach (var text in SampleTexts())
        {
            Assert.Equal(ml.EncodeToIds(text).ToArray(), spm.Encode(text, addBos: true).ToArray());
        }
    }
}
