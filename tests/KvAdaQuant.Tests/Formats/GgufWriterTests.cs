using System.Buffers.Binary;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Formats;

public class GgufWriterTests
{
    [Fact]
    public void WrittenFileReadsBackWithExactLayout()
    {
        using var dir = new TempDir();
        var w = new GgufWriter();
        w.Set("a.string", "héllo ▁world");
        w.Set("a.u32", 7u);
        w.Set("a.i32", -3);
        w.Set("a.u64", ulong.MaxValue);
        w.Set("a.f32", 0.25f);
        w.Set("a.bool", true);
        w.Set("a.strings", new[] { "x", "", "▁y" });
        w.Set("a.floats", new[] { 1f, -2f });
        w.Set("a.ints", new[] { 1, -2, 3 });
        var rng = new Random(1);
        var data = Enumerable.Range(0, 64 * 3).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        GgufRowSource src = (first, count, dst) => data.AsSpan((int)first * 64, count * 64).CopyTo(dst);
        w.AddTensor("t.f32", GgmlType.F32, [64, 3], src);
        w.AddTensor("t.f16", GgmlType.F16, [64, 3], src);
        w.AddTensor("t.q8", GgmlType.Q8_0, [64, 3], src);
        w.AddTensor("t.q4", GgmlType.Q4_0, [64, 3], src);
        w.AddTensor("t.vec", GgmlType.F32, [5], (first, count, dst) => data.AsSpan(0, 5).CopyTo(dst));
        var path = dir.File("w.gguf");
        long size = w.Write(path, 2);

        using var g = GgufFile.Open(path);
        Assert.Equal(3u, g.Version);
        Assert.Equal("héllo ▁world", g.GetString("a.string"));
        Assert.Equal(7, g.GetInteger("a.u32"));
        Assert.Equal(-3, g.GetInteger("a.i32"));
        Assert.Equal(ulong.MaxValue, (ulong)g.Get("a.u64")!);
        Assert.Equal(0.25, g.GetFloat("a.f32"));
        Assert.Equal(true, g.Get("a.bool"));
        Assert.Equal(new[] { "x", "", "▁y" }, (string[])g.Get("a.strings")!);
        Assert.Equal(new[] { 1f, -2f }, (float[])g.Get("a.floats")!);
        Assert.Equal(new[] { 1, -2, 3 }, (int[])g.Get("a.ints")!);

        // Tensors follow each other in order, each padded to 32 bytes; the file ends after the last padding.
        long expectedOffset = g.DataOffset;
        foreach (var (t, type) in g.Tensors.Zip(new[] { GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.F32 }))
        {
            Assert.Equal(type, t.Type);
            Assert.Equal(expectedOffset, t.Offset);
            Assert.Equal(0, t.Offset % 32);
            expectedOffset += (t.ByteSize + 31) / 32 * 32;
        }

        Assert.Equal(expectedOffset, size);
        Assert.Equal(size, new FileInfo(path).Length);
        Assert.Equal(0, g.DataOffset % 32);
        Assert.Equal(new long[] { 64, 3 }, g.Tensors[2].Shape);
        Assert.Equal(3 * 2 * 34, g.Tensors[2].ByteSize);

        unsafe
        {
            foreach (var t in g.Tensors.Take(4))
            {
                var expected = new byte[t.ByteSize];
                RowQuantizer.Quantize(t.Type, data, expected);
                Assert.Equal(expected, new ReadOnlySpan<byte>(g.TensorData(t), (int)t.ByteSize).ToArray());
            }
        }
    }

    [Fact]
    public void EveryMetadataTypeIsWrittenAndCopiedExactly()
    {
        using var dir = new TempDir();
        var w = new GgufWriter();
        w.SetValue("t.u8", GgufValueType.UInt8, (byte)200);
        w.SetValue("t.i8", GgufValueType.Int8, (sbyte)-5);
        w.SetValue("t.u16", GgufValueType.UInt16, (ushort)60000);
        w.SetValue("t.i16", GgufValueType.Int16, (short)-300);
        w.SetValue("t.u32", GgufValueType.UInt32, 4_000_000_000u);
        w.SetValue("t.i64", GgufValueType.Int64, long.MinValue);
        w.SetValue("t.f64", GgufValueType.Float64, Math.PI);
        w.SetValue("t.u32s", GgufValueType.Array, new[] { 1, -1 }, GgufValueType.UInt32);
        w.SetValue("t.u8s", GgufValueType.Array, new object[] { (byte)1, (byte)255 }, GgufValueType.UInt8);
        w.SetValue("t.f64s", GgufValueType.Array, new object[] { 0.5, -2.0 }, GgufValueType.Float64);
        w.Set("t.s", "x");
        w.AddTensor("v", GgmlType.F32, [4], (_, _, d) => d.Fill(1));
        w.Write(dir.File("a.gguf"), 1);

        using var a = GgufFile.Open(dir.File("a.gguf"));
        Assert.Equal((byte)200, a.Get("t.u8"));
        Assert.Equal((sbyte)-5, a.Get("t.i8"));
        Assert.Equal((ushort)60000, a.Get("t.u16"));
        Assert.Equal((short)-300, a.Get("t.i16"));
        Assert.Equal(4_000_000_000L, a.GetInteger("t.u32"));
        Assert.Equal(long.MinValue, a.Get("t.i64"));
        Assert.Equal(Math.PI, a.Get("t.f64"));
        Assert.Equal(GgufValueType.UInt32, a.ArrayElementTypes["t.u32s"]);
        Assert.Equal(new[] { 1, -1 }, (int[])a.Get("t.u32s")!);
        Assert.Equal(["t.u8", "t.i8", "t.u16", "t.i16", "t.u32", "t.i64", "t.f64", "t.u32s", "t.u8s", "t.f64s", "t.s"], a.MetadataKeys);

        // Copying every key into a new file reproduces the header byte for byte.
        var b = new GgufWriter();
        foreach (var key in a.MetadataKeys)
        {
            b.Copy(a, key);
        }

        b.AddTensor("v", GgmlType.F32, [4], (_, _, d) => d.Fill(1));
        b.Write(dir.File("b.gguf"), 1);
        Assert.Equal(File.ReadAllBytes(dir.File("a.gguf")), File.ReadAllBytes(dir.File("b.gguf")));

        Assert.Throws<ArgumentException>(() => b.SetValue("t.bad", GgufValueType.UInt32, "text"));
        Assert.Throws<ArgumentException>(() => b.SetValue("t.nested", GgufValueType.Array, new object[] { new int[1] }, GgufValueType.Array));
    }

    [Fact]
    public void ManyChunksAreWrittenInRowOrder()
    {
        // 4096 x 600 floats: three chunks of 256 rows and one partial, produced in parallel.
        using var dir = new TempDir();
        var w = new GgufWriter();
        GgufRowSource src = (first, count, dst) =>
        {
            for (int r = 0; r < count; r++)
            {
                dst.Slice(r * 4096, 4096).Fill(first + r);
            }
        };
        w.AddTensor("big", GgmlType.F32, [4096, 600], src);
        var path = dir.File("big.gguf");
        w.Write(path, 2);
        using var g = GgufFile.Open(path);
        unsafe
        {
            var t = g.Tensors[0];
            var floats = new ReadOnlySpan<float>(g.TensorData(t), 4096 * 600);
            for (int r = 0; r < 600; r++)
            {
                Assert.Equal(r, floats[r * 4096]);
                Assert.Equal(r, floats[(r * 4096) + 4095]);
            }
        }
    }

    [Fact]
    public void InvalidTensorsAreRejectedBeforeWriting()
    {
        var w = new GgufWriter();
        GgufRowSource src = (_, _, _) => { };
        Assert.Contains("block size", Assert.Throws<ArgumentException>(() => w.AddTensor("x", GgmlType.Q8_0, [33], src)).Message);
        Assert.Throws<NotSupportedException>(() => w.AddTensor("x", GgmlType.Q4_K, [256], src));
        Assert.Contains("1..63 bytes", Assert.Throws<ArgumentException>(() => w.AddTensor(new string('n', 64), GgmlType.F32, [1], src)).Message);
        w.AddTensor("x", GgmlType.F32, [1], src);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => w.AddTensor("x", GgmlType.F32, [1], src)).Message);
        w.Set("k", 1u);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => w.Set("k", 2u)).Message);
    }

    [Fact]
    public void Llama2cVocabularyBecomesSentencePieceForm()
    {
        var v = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, 512);
        Assert.Equal(512, v.Count);
        Assert.Equal(("<unk>", GgufTokenType.Unknown), (v.Tokens[0], v.Types[0]));
        Assert.Equal(("<s>", GgufTokenType.Control), (v.Tokens[1], v.Types[1]));
        Assert.Equal(("</s>", GgufTokenType.Control), (v.Tokens[2], v.Types[2]));
        Assert.Equal(("<0x00>", GgufTokenType.Byte), (v.Tokens[3], v.Types[3]));
        Assert.Equal(("<0x0A>", GgufTokenType.Byte), (v.Tokens[13], v.Types[13]));
        Assert.Equal(("<0xFF>", GgufTokenType.Byte), (v.Tokens[258], v.Types[258]));
        Assert.All(v.Tokens.Skip(259), t => Assert.DoesNotContain(' ', t));
        Assert.Contains(v.Tokens, t => t.StartsWith('▁'));
        Assert.Equal(512, v.Tokens.Distinct().Count());
        Assert.All(v.Types.Skip(259), t => Assert.Equal(GgufTokenType.Normal, t));
    }

    [Theory]
    [InlineData(259)]
    [InlineData(128256)]
    [InlineData(151936)]
    public void SyntheticVocabularyHasUniquePiecesOfTheRequestedSize(int size)
    {
        var v = GgufVocabulary.Synthetic(size);
        Assert.Equal(size, v.Count);
        Assert.Equal(size, v.Tokens.Distinct(StringComparer.Ordinal).Count());
        Assert.Equal("<0x41>", v.Tokens[3 + 0x41]);
        Assert.Equal(GgufTokenType.Byte, v.Types[258]);
        Assert.True(v.Scores.Skip(260).Zip(v.Scores.Skip(259)).All(p => p.First < p.Second));
    }

    [Fact]
    public void SyntheticModelsAreDeterministicPerSeedAndThreadCount()
    {
        using var dir = new TempDir();
        var preset = SyntheticModelPreset.Find("tiny-qwen2");
        SyntheticModelWriter.Create(preset, GgmlType.Q8_0, 5).Write(dir.File("a.gguf"), 1);
        SyntheticModelWriter.Create(preset, GgmlType.Q8_0, 5).Write(dir.File("b.gguf"), 2);
        SyntheticModelWriter.Create(preset, GgmlType.Q8_0, 6).Write(dir.File("c.gguf"), 2);
        var a = File.ReadAllBytes(dir.File("a.gguf"));
        Assert.Equal(a, File.ReadAllBytes(dir.File("b.gguf")));
        var c = File.ReadAllBytes(dir.File("c.gguf"));
        Assert.Equal(a.Length, c.Length);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void RealSizePresetsHaveTheExactShapes()
    {
        var l1 = SyntheticModelPreset.Find("llama-3.2-1b");
        Assert.Equal((2048, 16, 32, 8, 8192, 128256, 500000f, true), (l1.Config.Dim, l1.Config.Layers, l1.Config.Heads, l1.Config.KvHeads, l1.Config.HiddenDim, l1.Config.VocabSize, l1.Config.RopeTheta, l1.Config.TiedEmbeddings));
        Assert.Equal(new Model.RopeScaling(32f, 1f, 4f, 8192), l1.Config.RopeScaling);
        var w = SyntheticModelWriter.Create(l1, GgmlType.Q8_0, 1);
        Assert.Equal(1 + (16 * 9) + 1 + 1, w.TensorCount); // token_embd, 9 per block, output_norm, rope_freqs; no output (tied)
        var l8 = SyntheticModelPreset.Find("llama-3.1-8b");
        Assert.Equal((4096, 32, 32, 8, 14336, 128256, false), (l8.Config.Dim, l8.Config.Layers, l8.Config.Heads, l8.Config.KvHeads, l8.Config.HiddenDim, l8.Config.VocabSize, l8.Config.TiedEmbeddings));
        Assert.Equal(1 + (32 * 9) + 1 + 1 + 1, SyntheticModelWriter.Create(l8, GgmlType.Q4_0, 1).TensorCount);
        var q = SyntheticModelPreset.Find("qwen2.5-0.5b");
        Assert.Equal((896, 24, 14, 2, 4864, 151936, 1000000f, true, true), (q.Config.Dim, q.Config.Layers, q.Config.Heads, q.Config.KvHeads, q.Config.HiddenDim, q.Config.VocabSize, q.Config.RopeTheta, q.Config.TiedEmbeddings, q.QkvBias));
        Assert.Equal(1 + (24 * 12) + 1, SyntheticModelWriter.Create(q, GgmlType.Q8_0, 1).TensorCount);
        Assert.Contains("known presets", Assert.Throws<ArgumentException>(() => SyntheticModelPreset.Find("llama-9")).Message);
    }

    [Fact]
    public void Llama3RopeFactorsFollowTheWavelengthBands()
    {
        var f = GgufModelExporter.Llama3RopeFactors(500000f, 64, new Model.RopeScaling(32f, 1f, 4f, 8192));
        Assert.Equal(32, f.Length);
        Assert.Equal(1f, f[0]); // wavelength 2 pi: high frequency, unscaled
        Assert.Equal(32f, f[31]); // longest wavelength: divided by the factor
        Assert.True(f.Zip(f.Skip(1)).All(p => p.First <= p.Second));
        Assert.Contains(f, x => x > 1f && x < 32f);
    }
}
