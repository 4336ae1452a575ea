using KvAdaQuant.Formats;

namespace KvAdaQuant.Tests.Formats;

/// <summary>Malformed llama2.c checkpoints and tokenizers fail with a message naming the file and the problem.</summary>
public class Llama2cBadInputTests
{
    private static ModelFormatException LoadFails(string path)
        => Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path, Fixtures.Stories260KTokenizer).Dispose());

    [Fact]
    public void TruncatedFp32FileIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories260K);
        var path = dir.File("truncated.bin");
        File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
        var e = LoadFails(path);
        Assert.Contains("truncated.bin", e.Message);
        Assert.Contains("implies 1056540 bytes but the file has 1055540", e.Message);
    }

    [Fact]
    public void AFileThatIsNoModelSaysSoRatherThanOnlyNamingAHeaderField()
    {
        // A text file, an image: read as a llama2.c header, the message was only "header: dim 544173600 is not a positive
        // multiple of n_heads 1646294055".
        using var dir = new TempDir();
        var text = dir.File("notes.txt");
        File.WriteAllText(text, "no it was n't black monday but while the new york stock exchange did n't fall apart");
        var e = LoadFails(text);
        Assert.StartsWith($"{text}: not a GGUF file (no GGUF magic) nor a llama2.c fp32 checkpoint (a header of 7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len): dim ", e.Message);

        // A file named .gguf without the magic is named as such.
        var gguf = dir.File("model.gguf");
        File.WriteAllBytes(gguf, [0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10, 0, 0, 0, 13]);
        Assert.Equal($"{gguf}: not a GGUF file: it starts with the bytes 89504E47, not 'GGUF' (47475546)", LoadFails(gguf).Message);
    }

    [Fact]
    public void TruncatedQ80FileIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories3M);
        var path = dir.File("q80.bin");
        File.WriteAllBytes(path, bytes[..300]);
        var e = LoadFails(path);
        Assert.Contains("q80.bin", e.Message);
        Assert.Contains("but the file has 300", e.Message);
    }

    [Fact]
    public void ForgedHeaderClaimingTerabytesIsRejectedWithoutAllocating()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories260K);
        BitConverter.GetBytes(65536).CopyTo(bytes, 0);     // dim
        BitConverter.GetBytes(262144).CopyTo(bytes, 4);    // hidden
        BitConverter.GetBytes(1024).CopyTo(bytes, 8);      // layers
        BitConverter.GetBytes(512).CopyTo(bytes, 12);      // heads
        BitConverter.GetBytes(512).CopyTo(bytes, 16);      // kv heads
        var path = dir.File("forged.bin");
        File.WriteAllBytes(path, bytes);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var e = LoadFails(path);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Contains("forged.bin", e.Message);
        Assert.Matches("implies [0-9]{13,} bytes", e.Message);
        Assert.True(allocated < 50_000_000, $"allocated {allocated} bytes while rejecting a forged header");
    }

    [Fact]
    public void ImpossibleShapeIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories260K);
        BitConverter.GetBytes(3).CopyTo(bytes, 16); // 8 heads, 3 kv heads
        var path = dir.File("shape.bin");
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(path);
        Assert.Contains("n_kv_heads must divide n_heads (8), found 3", e.Message);
    }

    [Fact]
    public void WrongQ80VersionIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories3M);
        BitConverter.GetBytes(7).CopyTo(bytes, 4);
        var path = dir.File("v7.bin");
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(path);
        Assert.Contains("version 7 is not supported", e.Message);
    }

    [Fact]
    public void TinyFileIsRejected()
    {
        using var dir = new TempDir();
        var path = dir.File("tiny.bin");
        File.WriteAllBytes(path, [1, 2]);
        var e = LoadFails(path);
        Assert.Contains("too short", e.Message);
    }

    [Fact]
    public void TokenizerWithWrongVocabularyIsRejected()
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(Fixtures.Stories3M, Fixtures.Stories260KTokenizer).Dispose());
        Assert.Contains("tok512.bin", e.Message);
        Assert.Contains("4096", e.Message);

        var e2 = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(Fixtures.Stories260K, Fixtures.Stories3MTokenizer).Dispose());
        Assert.Contains("vocabularies disagree", e2.Message);
    }

    [Fact]
    public void MissingModelNamesThePlacesSearched()
    {
        var e = Assert.Throws<FileNotFoundException>(() => ModelLoader.Load("no-such-model"));
        Assert.Contains("no-such-model", e.Message);
    }

    [Fact]
    public void VocabularySizeOfIntMinValueIsRejectedByName()
    {
        // Found by LoaderFuzzTests: the negative vocab_size of an untied classifier was negated with Math.Abs, which
        // throws OverflowException for int.MinValue.
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories260K);
        BitConverter.GetBytes(int.MinValue).CopyTo(bytes, 20);
        var path = dir.File("vocab.bin");
        File.WriteAllBytes(path, bytes);
        var e = LoadFails(path);
        Assert.EndsWith("vocab_size must be in 1..4194304, found 2147483647", e.Message);
    }

    [Fact]
    public void TokenizerPieceLengthNearIntMaxValueIsRejected()
    {
        // Found by LoaderFuzzTests: a piece length near int.MaxValue overflowed the bounds check (offset + length) and
        // the read threw ArgumentOutOfRangeException.
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Fixtures.Stories260KTokenizer);
        BitConverter.GetBytes(int.MaxValue).CopyTo(bytes, 4 + 4); // max_token_length, then token 0: score, length
        var path = dir.File("tok512.bin");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.LoadTokenizer(path, 512));
        Assert.Equal($"{path}: token 0: length 2147483647 at offset 8 runs past the end of the file ({bytes.Length} bytes)", e.Message);
    }
}
