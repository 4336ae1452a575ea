using KvAdaQuant.KvCache;

namespace KvAdaQuant.Engine;

/// <summary>
/// Saves an <see cref="InferenceSession"/>'s KV cache, the tokens it holds and the logits of the last position to a
/// stream, and restores them into a session over the same model with a cache built by the same plan, so that continuing
/// after a load is bit for bit continuing the original (llama.cpp's state / prompt-cache files, for our caches). The
/// format (little-endian; strings are an int32 UTF-8 byte count and the bytes):
/// <code>
/// magic "KVAQSTAT" (8) | version u32 (1) | model fingerprint: i32 n, n x (name, value) strings ("model" first)
/// | KV plan: description string, capacity i32, layers i32, per layer K and V spec (15 bytes each: bits u8, group i32,
///   axis u8, symmetric u8, residual i32, sinks i32) | tokens: i32 n, n x i32 | logits: i32 v (0 or the vocabulary), v x f32
/// | application data string | per layer K then V, per KV head: FP32/FP16 rows, or sink rows (FP16), packed codes,
///   FP16 scales/zeros, residual rows (FP16) (exactly the cache's ByteCount in all) | SHA-256 of everything before (32)
/// </code>
/// Loading refuses, before it touches the session, a file that is not a state file, a newer version, a truncated or
/// damaged file (<see cref="InvalidDataException"/> naming the section and offset), another model, another plan or a
/// state longer than the context (<see cref="KvCacheException"/> naming the field, layer or size).
/// </summary>
public static class SessionStateFile
{
    /// <summary>The format version this code writes and reads.</summary>
    public const uint Version = 1;

    /// <summary>Bytes of the trailing SHA-256.</summary>
    public const int ChecksumBytes = 32;

    /// <summary>The first eight bytes of every state file.</summary>
    public static ReadOnlySpan<byte> Magic => "KVAQSTAT"u8;

    /// <summary>
    /// Writes the state of <paramref name="session"/>: its cache, <paramref name="tokens"/> (the tokens the cache holds,
    /// one per position), the logits of the last call and <paramref name="applicationData"/>. Returns the bytes written.
    /// </summary>
    public static long Save(Stream stream, InferenceSession session, IReadOnlyList<int> tokens, string applicationData = "")
    {
        var cache = session.Cache;
        if (tokens.Count != cache.Length)
        {
            throw new ArgumentException($"{tokens.Count} tokens given for a cache that holds {cache.Length} positions: a state names the token of every cached position");
        }

        if (!KvCacheState.CanSave(cache))
        {
            KvCacheState.LayerSpecs(cache); // throws, naming the layer
        }

        using var w = new KvStateWriter(stream);
        w.Write(Magic);
        w.WriteUInt32(Version);
        session.Fingerprint.Write(w);
        KvCacheState.WritePlan(w, cache);
        w.WriteInt32(tokens.Count);
        foreach (int t in tokens)
        {
            w.WriteInt32(t);
        }

        var logits = tokens.Count > 0 ? session.Logits : [];
        w.WriteInt32(logits.Length);
        w.Write(logits);
        w.WriteString(applicationData);
        KvCacheState.WriteData(w, cache);
        w.WriteChecksum();
        stream.Flush();
        return w.Position;
    }

    /// <summary>
    /// <see cref="Save(Stream, InferenceSession, IReadOnlyList{int}, string)"/> to <paramref name="path"/>, atomically: to a
    /// temporary file in the same folder, renamed over <paramref name="path"/> once complete. Returns the file's size.
    /// </summary>
    public static long SaveFile(string path, InferenceSession session, IReadOnlyList<int> tokens, string applicationData = "")
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            throw new IOException($"{path}: is a folder; give the state file's path");
        }

        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            long bytes;
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                bytes = Save(fs, session, tokens, applicationData);
                fs.Flush(flushToDisk: true);
            }

            File.Move(tmp, full, overwrite: true);
            return bytes;
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>
    /// Restores a state into <paramref name="session"/> (its cache and logits) and returns the tokens and data saved with it.
    /// <paramref name="source"/> names the stream in errors. <paramref name="checkApplicationData"/>, when given, sees the
    /// application data before anything is restored and may refuse it by throwing. Every check runs before the session is
    /// touched when <paramref name="stream"/> can seek (a file); otherwise a failure while reading the data leaves the
    /// cache empty.
    /// </summary>
    public static SessionState Load(Stream stream, InferenceSession session, string source = "state", Action<string>? checkApplicationData = null)
    {
        var cache = session.Cache;
        long start = stream.CanSeek ? stream.Position : 0;
        using var r = new KvStateReader(stream, source);
        r.Section = "magic";
        Span<byte> magic = stackalloc byte[8];
        int got = stream.ReadAtLeast(magic, 8, throwOnEndOfStream: false);
        if (got < 8 || !magic.SequenceEqual(Magic))
        {
            throw new InvalidDataException($"{source}: not a kvaq state file (it starts with {Printable(magic[..got])}, not \"KVAQSTAT\")");
        }

        r.Skip(magic);
        r.Section = "version";
        uint version = r.ReadUInt32();
        if (version > Version)
        {
            throw new InvalidDataException($"{source}: state file version {version} was written by a newer kvaq; this one reads version {Version} (save the state again with this kvaq)");
        }

        if (version == 0)
        {
            throw new InvalidDataException($"{source}: corrupt state file: version 0 at offset 8");
        }

        var fingerprint = ModelFingerprint.Read(r);
        var plan = KvCacheState.ReadPlan(r);
        r.Section = "tokens";
        long at = r.Position;
        int count = r.ReadInt32();
        if (count < 0 || count > plan.Capacity)
        {
            throw new InvalidDataException($"{source}: corrupt state file: {count} tokens at offset {at:N0} for a context of {plan.Capacity}");
        }

        var tokens = r.ReadArray<int>(count);
        r.Section = "logits";
        at = r.Position;
        int vocab = r.ReadInt32();
        if (vocab != (count == 0 ? 0 : fingerprint.Int("vocab_size", source)))
        {
            throw new InvalidDataException($"{source}: corrupt state file: {vocab} logits at offset {at:N0} (expected {(count == 0 ? 0 : fingerprint.Int("vocab_size", source))})");
        }

        var logits = r.ReadArray<float>(vocab);
        r.Section = "application data";
        string appData = r.ReadString("the application data", 64 << 20);
        long headerEnd = r.Position;

        // The data's size follows from the header; a seekable file is checked whole (size, checksum) before anything else.
        int kvHeads = fingerprint.Int("kv_heads", source), headDim = fingerprint.Int("head_dim", source);
        var sections = new List<(string Name, long Bytes)>();
        for (int i = 0; i < plan.Layers.Count; i++)
        {
            sections.Add(($"layer {i} K", Bytes(() => (long)kvHeads * plan.Layers[i].K.BytesPerHead(headDim, count), source)));
            sections.Add(($"layer {i} V", Bytes(() => (long)kvHeads * plan.Layers[i].V.BytesPerHead(headDim, count), source)));
        }

        long total = Bytes(() => checked(headerEnd + sections.Sum(s => s.Bytes) + ChecksumBytes), source);
        if (stream.CanSeek)
        {
            CheckWhole(stream, start, headerEnd, sections, total, source);
        }

        if (session.Fingerprint.Difference(fingerprint) is { } otherModel)
        {
            throw new KvCacheException($"{source}: {otherModel}");
        }

        if (KvCacheState.Mismatch(plan, cache, count) is { } otherPlan)
        {
            throw new KvCacheException($"{source}: {otherPlan}");
        }

        int vocabSize = session.Transformer.Config.VocabSize;
        for (int i = 0; i < count; i++)
        {
            if ((uint)tokens[i] >= (uint)vocabSize)
            {
                throw new InvalidDataException($"{source}: corrupt state file: token {tokens[i]} (index {i}) is outside the vocabulary of {vocabSize}");
            }
        }

        checkApplicationData?.Invoke(appData);
        KvCacheState.ReadData(r, cache, count);
        try
        {
            r.VerifyChecksum();
        }
        catch
        {
            cache.Clear();
            throw;
        }

        session.RestoreLogits(logits);
        return new SessionState(tokens, appData, fingerprint.Model, plan.Description, r.Position);
    }

    /// <summary><see cref="Load"/> from the file <paramref name="path"/>.</summary>
    public static SessionState LoadFile(string path, InferenceSession session, Action<string>? checkApplicationData = null)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Load(fs, session, path, checkApplicationData);
    }

    private static long Bytes(Func<long> size, string source)
    {
        try
        {
            return size();
        }
        catch (OverflowException)
        {
            throw new InvalidDataException($"{source}: corrupt state file: the header describes more data than a file can hold");
        }
    }

    private static void CheckWhole(Stream stream, long start, long headerEnd, List<(string Name, long Bytes)> sections, long total, string source)
    {
        long length = stream.Length - start;
        if (length < total)
        {
            long offset = headerEnd;
            string where = "checksum";
            foreach (var (name, bytes) in sections)
            {
                if (length < offset + bytes)
                {
                    where = $"{name} data (offsets {offset:N0}..{offset + bytes:N0})";
                    break;
                }

                offset += bytes;
            }

            throw new InvalidDataException($"{source}: truncated state file: {length:N0} bytes, but its header describes {total:N0}; it ends in the {where}");
        }

        if (length > total)
        {
            throw new InvalidDataException($"{source}: corrupt state file: {length - total:N0} bytes after the checksum (the header describes {total:N0} bytes)");
        }

        long resume = stream.Position;
        stream.Position = start;
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (long left = total - ChecksumBytes; left > 0;)
        {
            int n = stream.ReadAtLeast(buffer.AsSpan(0, (int)Math.Min(buffer.Length, left)), (int)Math.Min(buffer.Length, left));
            hash.AppendData(buffer, 0, n);
            left -= n;
        }

        Span<byte> stored = stackalloc byte[ChecksumBytes];
        stream.ReadExactly(stored);
        if (!hash.GetHashAndReset().AsSpan().SequenceEqual(stored))
        {
            throw new InvalidDataException($"{source}: corrupt state file: the SHA-256 checksum at offset {total - ChecksumBytes:N0} does not match the bytes before it (the file was changed or damaged after it was written)");
        }

        stream.Position = resume;
    }

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0)
        {
            return "nothing (an empty file)";
        }

        var sb = new System.Text.StringBuilder("\"");
        foreach (byte b in bytes)
        {
            sb.Append(b is >= 0x20 and < 0x7f ? ((char)b).ToString() : $"\\x{b:x2}");
        }

        return sb.Append('"').ToString();
    }
}
