using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Tokenization;

/// <summary>A llama2.c model exported to GGUF carries its vocabulary; the GGUF tokenizer must encode as llama2.c's does.</summary>
public class ConvertedVocabularyTests
{
    [Fact]
    public void Stories260KVocabularyInGgufEncodesLikeTokenizerBin()
    {
        using var dir = new TempDir();
        using (var model = ModelLoader.Load(Fixtures.Stories260K))
        {
            var vocab = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, model.Config.VocabSize);
            GgufModelExporter.FromModel(model, vocab, KvAdaQuant.Numerics.GgmlType.F32, "stories260K").Write(dir.File("m.gguf"));
        }

        using var g = GgufFile.Open(dir.File("m.gguf"));
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(GgufTokenizerFactory.Create(g));
        var bin = Llama2cTokenizer.Load(Fixtures.Stories260KTokenizer, 512);
        var reference = Fixtures.ReferenceGreedy("stories260K").GetProperty("decoded_text").GetString()!;
        foreach (var text in new[] { reference, "Once upon a time, Zoë saw 3 dogs.\nThe end!", "  two  spaces" })
        {
            var ids = tok.Encode(text, addBos: true);
            Assert.Equal(bin.Encode(text, addBos: true), ids);
            Assert.Equal(text, ((ITokenizer)tok).Decode(ids));
        }
    }
}
