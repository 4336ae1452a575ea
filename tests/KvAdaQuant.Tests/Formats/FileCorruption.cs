using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;

namespace KvAdaQuant.Tests.Formats;

/// <summary>A field of a binary file: where it is, how wide (1, 4 or 8 bytes) and what it holds.</summary>
public sealed record FileField(int Offset, int Width, string Name);

/// <summary>A record of a binary file (a metadata entry, a tensor descriptor) and the count field that counts it.</summary>
public sealed record FileEntry(int Offset, int Length, int CountOffset, int CountWidth, string Name);

/// <summary>What the fuzz tests know of a valid file: its bytes, its header fields and its records.</summary>
public sealed record FileLayout(byte[] Bytes, IReadOnlyList<FileField> Fields, IReadOnlyList<FileEntry> Entries, int HeaderEnd);

/// <summary>
/// One corruption of a file. Kinds: <c>truncate</c> (keep <see cref="Position"/> bytes), <c>flip</c> (xor the byte at
/// <see cref="Position"/> with <see cref="Value"/>), <c>field</c> (overwrite header field number <see cref="Position"/>
/// with <see cref="Value"/>), <c>raw</c> (write <see cref="Value"/>, <see cref="Width"/> bytes wide, at
/// <see cref="Position"/>), <c>dup</c> (repeat record number <see cref="Position"/> and add one to its count).
/// </summary>
public sealed record Mutation(string Kind, int Position, int Width, ulong Value)
{
    public byte[] Apply(FileLayout layout, byte[] bytes)
    {
        switch (Kind)
        {
            case "truncate":
                return bytes[..(Position % bytes.Length)];
            case "flip":
                bytes[Position % bytes.Length] ^= (byte)Math.Max(1, Value & 0xff);
                return bytes;
            case "field" when layout.Fields.Count > 0:
                {
                    var f = layout.Fields[Position % layout.Fields.Count];
                    return f.Offset + f.Width <= bytes.Length ? Write(bytes, f.Offset, f.Width, Value) : bytes;
                }

            case "raw":
                {
                    int at = Position % Math.Max(1, Math.Min(bytes.Length, layout.HeaderEnd));
                    return at + Width <= bytes.Length ? Write(bytes, at, Width, Value) : bytes;
                }

            case "dup" when layout.Entries.Count > 0:
                {
                    var e = layout.Entries[Position % layout.Entries.Count];
                    if (e.Offset + e.Length > bytes.Length || e.CountOffset + e.CountWidth > bytes.Length)
                    {
                        return bytes;
                    }

                    ulong count = e.CountWidth == 8 ? BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(e.CountOffset)) : BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(e.CountOffset));
                    var copy = Write(bytes, e.CountOffset, e.CountWidth, count + 1);
                    return [.. copy.AsSpan(0, e.Offset + e.Length), .. copy.AsSpan(e.Offset, e.Length), .. copy.AsSpan(e.Offset + e.Length)];
                }

            default:
                return bytes;
        }
    }

    private static byte[] Write(byte[] bytes, int at, int width, ulong value)
    {
        switch (width)
        {
            case 1:
                bytes[at] = (byte)value;
                break;
            case 4:
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), (uint)value);
                break;
            default:
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
                break;
        }

        return bytes;
    }
}

/// <summary>One corruption of a JSON document: node number <see cref="Node"/> replaced, removed, or given an extra (possibly duplicate) property.</summary>
public sealed record JsonMutation(string Kind, int Node, int Key, int Value)
{
    /// <summary>Values a corrupt document may hold anywhere: wrong types, extreme numbers, empty and odd containers.</summary>
    public static readonly string[] Values =
    [
        "null", "0", "-1", "1", "2147483647", "2147483648", "-2147483649", "9223372036854775807", "1e300", "-1e300", "0.5", "\"\"", "\"x\"",
        "\"llama3\"", "\"F32\"", "true", "false", "[]", "[\"x\"]", "[3]", "[-1]", "[[]]", "[{}]", "{}", "{\"rope_type\":3}",
        "{\"type\":\"llama3\",\"factor\":0,\"original_max_position_embeddings\":-1}", "{\"id\":\"x\"}", "{\"content\":3}", "[0,1]", "[1,0]",
        "[0,99999999999]", "{\"type\":\"Sequence\",\"pretokenizers\":3}", "{\"type\":3}",
    ];

    /// <summary>Property names the extra properties take (besides the document's own).</summary>
    public static readonly string[] Keys =
    [
        "rope_scaling", "head_dim", "tie_word_embeddings", "bos_token_id", "eos_token_id", "num_key_value_heads", "model_type", "added_tokens",
        "normalizer", "pre_tokenizer", "decoder", "merges", "unk_token", "type", "id", "content", "__metadata__", "dtype", "shape", "data_offsets",
    ];

    public string Apply(string json)
    {
        if (JsonNode.Parse(json) is not { } root)
        {
            return Kind == "replace" ? Values[Value % Values.Length] : json;
        }

        var nodes = new List<JsonNode>();
        Collect(root, nodes);
        var names = Keys.Concat(nodes.OfType<JsonObject>().SelectMany(o => o.Select(p => p.Key))).Distinct(StringComparer.Ordinal).ToList();
        var node = nodes[Node % nodes.Count];
        string value = Values[Value % Values.Length];
        switch (Kind)
        {
            case "replace" when node.Parent is JsonObject o:
                o[node.GetPropertyName()] = JsonNode.Parse(value);
                return root.ToJsonString();
            case "replace" when node.Parent is JsonArray a:
                a[node.GetElementIndex()] = JsonNode.Parse(value);
                return root.ToJsonString();
            case "replace":
                return value;
            case "remove" when node.Parent is JsonObject o:
                o.Remove(node.GetPropertyName());
                return root.ToJsonString();
            case "remove" when node.Parent is JsonArray a:
                a.RemoveAt(node.GetElementIndex());
                return root.ToJsonString();
            case "add" when node is JsonObject obj:
                {
                    // Written as text: a first property that may repeat a key the object has, with a corrupt value.
                    string key = names[Key % names.Count];
                    obj.Insert(0, "__fuzz_marker__", 0);
                    return root.ToJsonString().Replace("\"__fuzz_marker__\":0", JsonSerializer.Serialize(key) + ":" + value, StringComparison.Ordinal);
                }

            default:
                return root.ToJsonString();
        }
    }

    // Every node, but of a long array or object (a vocabulary, merges) only the first three members and the last.
    private static void Collect(JsonNode? n, List<JsonNode> into)
    {
        if (n is null)
        {
            return;
        }

        into.Add(n);
        IEnumerable<JsonNode?> children = n switch
        {
            JsonObject o => o.Select(p => p.Value),
            JsonArray a => a,
            _ => [],
        };
        var list = children.ToList();
        foreach (var c in list.Count > 8 ? [.. list.Take(3), list[^1]] : list)
        {
            Collect(c, into);
        }
    }
}

/// <summary>Generators of corruptions, and the check every fuzzed load must pass.</summary>
public static class FileCorruption
{
    /// <summary>Values written over counts, lengths, offsets and types: zero, one, all ones (-1), the int limits, huge ulongs.</summary>
    public static readonly ulong[] Extremes =
    [
        0, 1, 2, 3, 0x7f, 0xff, 0xffff, int.MaxValue, (ulong)int.MaxValue + 1, uint.MaxValue, (ulong)uint.MaxValue + 1, long.MaxValue, (ulong)long.MaxValue + 1,
        ulong.MaxValue, ulong.MaxValue - 7, 1UL << 40, 0x0000_0001_0000_0004,
    ];

    private static Gen<ulong> Extreme(FileLayout layout) => Gen.Frequency(
        (4, Gen.Int[0, Extremes.Length - 1].Select(i => Extremes[i])),
        (1, Gen.Const((ulong)layout.Bytes.Length)),
        (1, Gen.Const((ulong)layout.Bytes.Length + 1)),
        (1, Gen.ULong));

    /// <summary>One to three corruptions of <paramref name="layout"/>'s file.</summary>
    public static Gen<Mutation[]> Mutations(FileLayout layout)
    {
        int length = layout.Bytes.Length;
        int header = Math.Max(1, Math.Min(length, layout.HeaderEnd));
        var one = Gen.Frequency(
            (2, Gen.Int[0, length - 1].Select(p => new Mutation("truncate", p, 0, 0))),
            (1, Gen.Int[0, header - 1].Select(p => new Mutation("truncate", p, 0, 0))),
            (2, Gen.Select(Gen.Int[0, length - 1], Gen.Int[1, 255]).Select((p, v) => new Mutation("flip", p, 1, (ulong)v))),
            (3, Gen.Select(Gen.Int[0, header - 1], Gen.Int[1, 255]).Select((p, v) => new Mutation("flip", p, 1, (ulong)v))),
            (layout.Fields.Count > 0 ? 8 : 0, Gen.Select(Gen.Int[0, Math.Max(0, layout.Fields.Count - 1)], Extreme(layout)).Select((p, v) => new Mutation("field", p, 0, v))),
            (3, Gen.Select(Gen.Int[0, header - 1], Gen.OneOf(1, 4, 8), Extreme(layout)).Select((p, w, v) => new Mutation("raw", p, w, v))),
            (layout.Entries.Count > 0 ? 2 : 0, Gen.Int[0, Math.Max(0, layout.Entries.Count - 1)].Select(p => new Mutation("dup", p, 0, 0))));
        return one.Array[1, 3];
    }

    /// <summary>One to three corruptions of a JSON document.</summary>
    public static Gen<JsonMutation[]> JsonMutations => Gen.Select(Gen.OneOf("replace", "replace", "remove", "add", "add"), Gen.Int[0, 1000], Gen.Int[0, 1000], Gen.Int[0, 1000])
        .Select((k, n, key, v) => new JsonMutation(k, n, key, v)).Array[1, 3];

    public static byte[] Apply(FileLayout layout, Mutation[] mutations) => mutations.Aggregate((byte[])layout.Bytes.Clone(), (b, m) => b.Length == 0 ? b : m.Apply(layout, b));

    public static string Apply(string json, JsonMutation[] mutations) => mutations.Aggregate(json, (j, m) =>
    {
        try
        {
            return m.Apply(j);
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            return j; // an earlier mutation left no document to walk (not JSON, or a duplicate key JsonNode refuses)
        }
    });

    private static readonly Lock LogLock = new();

    /// <summary>
    /// Runs <paramref name="load"/> on another thread: it must finish within <paramref name="timeoutMs"/>, allocate less
    /// than 128 MB, and either return or throw an exception <paramref name="clear"/> accepts. Anything else fails the
    /// test, naming <paramref name="what"/> (an access violation or a stack overflow ends the test process: a failure too).
    /// With <c>KVAQ_FUZZ_LOG</c> set to a file, an unexpected exception is appended there (type, the first frame in
    /// src/, message) instead, so that a long run (<c>KVAQ_FUZZ_SCALE</c>) surveys every kind of failure at once.
    /// </summary>
    public static void Check(string what, Action load, Func<Exception, bool> clear, int timeoutMs = 20_000)
    {
        long allocated = 0;
        var task = Task.Factory.StartNew(
            () =>
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                try
                {
                    load();
                }
                finally
                {
                    allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                }
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);
        try
        {
            if (!task.Wait(timeoutMs))
            {
                Assert.Fail($"{what}: still running after {timeoutMs} ms (a hang?)");
            }
        }
        catch (AggregateException a) when (a.InnerException is { } e)
        {
            if (!clear(e))
            {
                Unexpected(what, e);
            }
        }

        Assert.True(allocated < 128L << 20, $"{what}: {allocated:N0} bytes allocated");
    }

    private static void Unexpected(string what, Exception e)
    {
        if (Environment.GetEnvironmentVariable("KVAQ_FUZZ_LOG") is { Length: > 0 } log)
        {
            var frame = e.StackTrace?.Split('\n').FirstOrDefault(l => l.Contains(" KvAdaQuant.", StringComparison.Ordinal) && !l.Contains("KvAdaQuant.Tests", StringComparison.Ordinal))?.Trim();
            string message = e.Message.ReplaceLineEndings(" ");
            lock (LogLock)
            {
                File.AppendAllText(log, $"{e.GetType().Name} | {frame} | {message[..Math.Min(200, message.Length)]}\n");
            }
        }
        else
        {
            Assert.Fail($"{what}: unexpected {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
        }
    }

    /// <summary>Offsets of the header fields and records of a GGUF file (as the format describes it, independently of the reader).</summary>
    public static FileLayout GgufLayout(byte[] b)
    {
        var fields = new List<FileField> { new(8, 8, "tensor count"), new(16, 8, "metadata count") };
        var entries = new List<FileEntry>();
        int p = 24;
        ulong tensors = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8)), kvs = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(16));
        string Str(string what, bool record = true)
        {
            if (record)
            {
                fields.Add(new(p, 8, what + " length"));
            }

            int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p));
            string s = Encoding.UTF8.GetString(b, p + 8, n);
            p += 8 + n;
            return s;
        }

        void Value(uint type, string key, bool record)
        {
            switch (type)
            {
                case 0 or 1 or 7:
                    p += 1;
                    break;
                case 2 or 3:
                    p += 2;
                    break;
                case 4 or 5 or 6:
                    if (record)
                    {
                        fields.Add(new(p, 4, key));
                    }

                    p += 4;
                    break;
                case 10 or 11 or 12:
                    p += 8;
                    break;
                case 8:
                    Str(key, record);
                    break;
                case 9:
                    {
                        fields.Add(new(p, 4, key + " element type"));
                        uint et = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p));
                        fields.Add(new(p + 4, 8, key + " count"));
                        long count = (long)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 4));
                        p += 12;
                        for (long i = 0; i < count; i++)
                        {
                            Value(et, $"{key}[{i}]", i < 3 || i == count - 1);
                        }

                        break;
                    }

                default:
                    throw new InvalidOperationException($"type {type}");
            }
        }

        for (ulong i = 0; i < kvs; i++)
        {
            int start = p;
            string key = Str("metadata key");
            fields.Add(new(p, 4, key + " type"));
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p));
            p += 4;
            Value(type, key, true);
            entries.Add(new(start, p - start, 16, 8, key));
        }

        for (ulong i = 0; i < tensors; i++)
        {
            int start = p;
            string name = Str("tensor name");
            fields.Add(new(p, 4, name + " n_dims"));
            int dims = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(p));
            p += 4;
            for (int d = 0; d < dims; d++)
            {
                fields.Add(new(p, 8, $"{name} ne[{d}]"));
                p += 8;
            }

            fields.Add(new(p, 4, name + " type"));
            fields.Add(new(p + 4, 8, name + " offset"));
            p += 12;
            entries.Add(new(start, p - start, 8, 8, name));
        }

        return new FileLayout(b, fields, entries, p);
    }
}
