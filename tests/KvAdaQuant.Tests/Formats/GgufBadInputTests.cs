using System.Buffers.Binary;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Formats;

/// <summary>Corrupted GGUF model files: each fails with a clear error naming the file and the problem, without large allocations.</summary>
public class GgufBadInputTests(ConvertedModels models) : IClassFixture<ConvertedModels>
{
    private string Source => models.Stories(GgmlType.F32);

    private static ModelFormatException LoadFails(string path)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path, Fixtures.Stories260KTokenizer).Dispose());
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 64 << 20, "more than 64 MB allocated while rejecting the file");
        Assert.Contains(Path.GetFileName(path), e.Message);
        return e;
    }

    /// <summary>Offset of the u32 type field of a tensor descriptor (name, n_dims, ne[], type, offset).</summary>
    private static int TypeFieldOf(byte[] bytes, string tensor)
    {
        int name = ConvertedModels.IndexOf(bytes, tensor);
        int dims = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(name + tensor.Length));
        return name + tensor.Length + 4 + (8 * dims);
    }

    [Fact]
    public void TruncatedTensorDataIsRejected()
    {
        var path = models.Patched(Source, "truncated.gguf", b => b[..^1000]);
        var e = LoadFails(path);
        Assert.Contains("runs past the end", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void WrongMagicIsRejected()
    {
        var path = models.Patched(Source, "magic.gguf", b =>
        {
            b[3] = (byte)'X';
            return b;
        });
        var e = Assert.Throws<ModelFormatException>(() => KvAdaQuant.Formats.Gguf.GgufFile.Open(path).Dispose());
        Assert.Contains("magic.gguf", e.Message);
        Assert.Contains("not a GGUF file", e.Message);
    }

    [Fact]
    public void OverlappingTensorsAreRejected()
    {
        // A norm pointed at the embedding's bytes (or a type whose blocks are larger than the written ones) loaded, and
        // generate failed with "non-finite K value NaN at position 0 + element 0", naming no file.
        var path = models.Patched(Source, "overlap.gguf", b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(TypeFieldOf(b, "blk.0.attn_norm.weight") + 4), 0);
            return b;
        });
        var e = LoadFails(path);
        Assert.EndsWith("overlap.gguf: tensor 'token_embd.weight' (data offset 0) overlaps tensor 'blk.0.attn_norm.weight' (256 bytes at data offset 0): a wrong offset, type or shape", e.Message);
    }

    [Fact]
    public void AnArchitectureThatIsNotAStringIsNamedAsSuch()
    {
        // It was "metadata 'general.architecture' is missing".
        using var dir = new TempDir();
        var w = new GgufWriter();
        w.Set("general.architecture", 7u);
        string path = dir.File("arch.gguf");
        w.Write(path);
        Assert.EndsWith("arch.gguf: metadata 'general.architecture' should be a string but is UInt32", LoadFails(path).Message);
    }

    [Fact]
    public void UnknownTensorTypeIsRejected()
    {
        var path = models.Patched(Source, "type.gguf", b =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(TypeFieldOf(b, "blk.0.attn_k.weight")), 99);
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("'blk.0.attn_k.weight': unknown tensor type 99", e.Message);
    }

    [Fact]
    public void UnsupportedGgmlTypeIsRejectedByName()
    {
        var path = models.Patched(Source, "iq2.gguf", b =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(TypeFieldOf(b, "blk.0.attn_k.weight")), 16);
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("'blk.0.attn_k.weight': type IQ2_XXS (16) is not supported (kvaq reads F32, F16, BF16, Q8_0", e.Message);
    }

    [Fact]
    public void MissingTensorIsRejected()
    {
        var path = models.Patched(Source, "missing.gguf", b =>
        {
            int i = ConvertedModels.IndexOf(b, "blk.0.attn_q.weight");
            b[i + 11] = (byte)'x'; // blk.0.attn_x.weight
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("tensor 'blk.0.attn_q.weight' is missing", e.Message);
    }

    [Theory]
    [InlineData("blk.5.attn_norm.weight", "tensor 'blk.5.attn_norm.weight' belongs to block 5, but llama.block_count is 5 (blocks 0..4)")]
    [InlineData("blk.7.ffn_up.weight", "tensor 'blk.7.ffn_up.weight' belongs to block 7, but llama.block_count is 5 (blocks 0..4)")]
    [InlineData("blk.0.ffn_gate_inp.weight", "tensor 'blk.0.ffn_gate_inp.weight' is not one that architecture llama reads")]
    [InlineData("output.bias", "tensor 'output.bias' is not one that architecture llama reads")]
    public void TensorTheModelDoesNotUseIsRejected(string extra, string message)
    {
        // stories260K as kvaq convert writes it (5 blocks, llama.block_count 5), plus one tensor no layer reads: what a
        // file whose block_count was lowered, or one of another architecture, looks like. llama.cpp refuses both.
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        var vocab = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, model.Config.VocabSize);
        var writer = GgufModelExporter.FromModel(model, vocab, GgmlType.Q8_0, "stories260K");
        writer.AddTensor(extra, GgmlType.F32, [64], (_, _, dst) => dst.Clear());
        using var dir = new TempDir();
        var path = dir.File("extra.gguf");
        writer.Write(path, 1);
        var e = LoadFails(path);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void TensorShapeDisagreeingWithMetadataIsRejected()
    {
        var path = models.Patched(Source, "shape.gguf", b =>
        {
            // llama.feed_forward_length: key, then u32 type 4, then the value 172 -> 176
            int key = ConvertedModels.IndexOf(b, "llama.feed_forward_length");
            int value = key + "llama.feed_forward_length".Length + 4;
            Assert.Equal(172u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(value)));
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(value), 176);
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("tensor 'blk.0.ffn_gate.weight' has shape [64, 172] but the metadata implies [64, 176]", e.Message);
    }

    [Fact]
    public void ForgedHeaderClaimingTerabytesIsRejectedWithoutAllocating()
    {
        var path = models.Patched(Source, "forged.gguf", b =>
        {
            // token_embd.weight: [64, 512] F32 -> [2^20, 2^20] F32, 4 TiB of data in a 1 MB file
            int ne = ConvertedModels.IndexOf(b, "token_embd.weight") + "token_embd.weight".Length + 4;
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(ne), 1UL << 20);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(ne + 8), 1UL << 20);
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("'token_embd.weight'", e.Message);
        Assert.Contains("runs past the end", e.Message);
    }

    [Fact]
    public void TokenizerWithAnotherVocabularyIsRejected()
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(Source, Fixtures.Stories3MTokenizer).Dispose());
        Assert.Contains("tok4096.bin", e.Message);
        Assert.Contains("vocabularies disagree", e.Message);
    }

    [Fact]
    public void VocabularySizeDisagreeingWithEmbeddingRowsIsRejected()
    {
        var path = models.Patched(Source, "vocab.gguf", b =>
        {
            int i = ConvertedModels.IndexOf(b, "llama.vocab_size");
            int value = i + "llama.vocab_size".Length + 4;
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(value), 600);
            return b;
        });
        var e = LoadFails(path);
        Assert.Contains("llama.vocab_size is 600 but token_embd.weight has 512 rows", e.Message);
    }

    /// <summary>
    /// A GGUF file written field by field: <paramref name="kvs"/> metadata entries and <paramref name="tensors"/> tensor
    /// descriptors written by <paramref name="body"/>, then <paramref name="length"/> bytes in all (zeros: a sparse file).
    /// </summary>
    private static string HandWritten(TempDir dir, string name, ulong tensors, ulong kvs, Action<BinaryWriter> body, long length = 0)
    {
        string path = dir.File(name);
        using (var w = new BinaryWriter(File.Create(path)))
        {
            w.Write(GgufFile.Magic);
            w.Write(3u);
            w.Write(tensors);
            w.Write(kvs);
            body(w);
            if (length > w.BaseStream.Length)
            {
                w.BaseStream.SetLength(length);
            }
        }

        return path;
    }

    private static void Key(BinaryWriter w, string key)
    {
        w.Write((ulong)key.Length);
        w.Write(System.Text.Encoding.UTF8.GetBytes(key));
    }

    [Fact]
    public void ArraysNestedTooDeepAreRejected()
    {
        // Every level is a 12-byte array header, and each was read by a recursive call: a file of 1.2 MB nesting 100,000
        // deep overflowed the stack, ending the process.
        using var dir = new TempDir();
        string Nested(int depth) => HandWritten(dir, $"nested{depth}.gguf", 0, 1, w =>
        {
            Key(w, "x");
            w.Write((uint)GgufValueType.Array);
            for (int i = 1; i < depth; i++)
            {
                w.Write((uint)GgufValueType.Array);
                w.Write(1UL);
            }

            w.Write((uint)GgufValueType.UInt32);
            w.Write(1UL);
            w.Write(7u);
        });

        using (var g = GgufFile.Open(Nested(GgufFile.MaxArrayNesting)))
        {
            Assert.Equal(GgufValueType.Array, g.MetadataTypes["x"]);
        }

        string path = Nested(GgufFile.MaxArrayNesting + 1);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.Equal($"{path}: metadata 'x': arrays nested more than 8 deep (at offset {24 + 9 + 4 + (12 * 8)})", e.Message);
    }

    [Fact]
    public void CountsBeyondWhatAnArrayHoldsAreRejectedInFilesOver2GB()
    {
        // A sparse 3 GB file: the count passed the file-size check, then turned negative as an int (OverflowException from
        // new object[count]); a string length did too (a read of a negative number of bytes).
        using var dir = new TempDir();
        const long size = 3L << 30;
        string array = HandWritten(dir, "array.gguf", 0, 1, w =>
        {
            Key(w, "x");
            w.Write((uint)GgufValueType.Array);
            w.Write((uint)GgufValueType.UInt8);
            w.Write(0xA000_0000UL);
        }, size);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(array).Dispose());
        Assert.Equal($"{array}: metadata 'x': array of 2684354560 elements (count at offset 41) is larger than kvaq reads ({Array.MaxLength / 4})", e.Message);

        string text = HandWritten(dir, "string.gguf", 0, 1, w => w.Write(0x9000_0000UL), size);
        e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(text).Dispose());
        Assert.Equal($"{text}: metadata key: string of 2415919104 bytes at offset 32 is larger than kvaq reads", e.Message);
    }

    [Fact]
    public void ATensorWhoseByteSizeOverflowsIsRejected()
    {
        // [2^23, 2^23, 2^16] F32 (each dimension below the file's size in bits) is 2^62 elements, 2^64 bytes: the size
        // wrapped to 0 and the file opened with the tensor in it.
        using var dir = new TempDir();
        string path = HandWritten(dir, "overflow.gguf", 1, 0, w =>
        {
            Key(w, "t");
            w.Write(3u);
            w.Write(1UL << 23);
            w.Write(1UL << 23);
            w.Write(1UL << 16);
            w.Write((uint)GgmlType.F32);
            w.Write(0UL);
        }, 1L << 20);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.Equal($"{path}: tensor 't': F32 [8388608, 8388608, 65536] takes more bytes than a file can hold", e.Message);
    }

    [Fact]
    public void ANaNWeightIsNamedWithTheFileAndTheLayerWhereTheCacheRefusesIt()
    {
        // No loader reads every weight, so a NaN in one (a damaged file) shows up in the forward pass, where the cache refuses
        // the non-finite K value. The error named neither the file nor the layer ("non-finite K value NaN at position 0 +
        // element 0: refusing to cache it").
        long at;
        using (var g = GgufFile.Open(Source))
        {
            at = g.FindTensor("blk.1.attn_k.weight")!.Offset;
        }

        var path = models.Patched(Source, "nan.gguf", b =>
        {
            BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan((int)at), float.NaN);
            return b;
        });
        using var m = ModelLoader.Load(path);
        using var t = new KvAdaQuant.Engine.Transformer(m, 1);
        using var s = new KvAdaQuant.Engine.InferenceSession(t, KvAdaQuant.KvCache.KvCacheFactory.Create("fp32", t.CacheLayout(8)));
        var e = Assert.Throws<KvAdaQuant.KvCache.KvValueException>(() => s.Prefill([1, 2, 3]));
        Assert.StartsWith($"{path}: layer 1: non-finite K value NaN at position 0 + element 0: refusing to cache it", e.Message, StringComparison.Ordinal);
        Assert.Contains("weights or activations", e.Message, StringComparison.Ordinal);

        var (rc, _, stderr) = KvAdaQuant.Tests.Cli.KvaqProcess.Run("generate", "-m", path, "-p", "Once", "-n", "2");
        Assert.Equal(1, rc);
        Assert.StartsWith($"kvaq: error: {path}: layer 1: non-finite K value NaN", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void RopeFrequencyFactorsThatAreNotPositiveAreRejected()
    {
        // A 0 in rope_freqs.weight (positions are divided by the factors) loaded, and the first forward pass made every
        // rotated key NaN, which the cache refused ("non-finite K value") naming no file.
        long at;
        using (var g = GgufFile.Open(models.TinyLlama))
        {
            at = g.FindTensor("rope_freqs.weight")!.Offset;
        }

        var path = models.Patched(models.TinyLlama, "rope.gguf", b =>
        {
            BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan((int)at + 12), 0f);
            return b;
        });
        Assert.EndsWith("rope.gguf: tensor 'rope_freqs.weight': element 3 is 0, but RoPE frequency factors must be positive and finite", LoadFails(path).Message);
    }
}
