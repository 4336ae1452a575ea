using System.Buffers.Binary;
using System.Text;
using CsCheck;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Formats;

/// <summary>
/// Valid small files written by kvaq's own code (GGUF, llama2.c, an HF folder, tokenizers, a session state), corrupted at
/// random (truncated, bytes flipped, header counts / lengths / offsets / types overwritten with extreme values, records
/// duplicated, JSON values replaced, removed or duplicated) and loaded through the entry points the command line uses.
/// Each load either succeeds, and then a short forward pass runs, or fails with the project's own error naming the file;
/// never another exception, a hang or a large allocation (<see cref="FileCorruption.Check"/>).
/// </summary>
public sealed class LoaderFuzzTests(LoaderFuzzTests.Files files) : IClassFixture<LoaderFuzzTests.Files>
{
    /// <summary>The valid files, written once.</summary>
    public sealed class Files : IDisposable
    {
        private readonly TempDir _dir = new();

        public Files()
        {
            using (var model = ModelLoader.Load(Fixtures.Stories260K))
            {
                var vocab = GgufVocabulary.FromLlama2cTokenizer(Fixtures.Stories260KTokenizer, model.Config.VocabSize);
                GgufModelExporter.FromModel(model, vocab, GgmlType.Q8_0, "stories260K").Write(Gguf, 1);
            }

            HfFolderWriter.Write(Fixtures.Stories260K, HfFolder, shards: 2);
            using (var g = GgufFile.Open(Gguf))
            {
                File.WriteAllText(Path.Combine(HfFolder, "tokenizer.json"), GgufTokenizerToHf.TokenizerJson(GgufTokenizerMetadata.FromGguf(g)!));
            }

            using var m = ModelLoader.Load(Fixtures.Stories260K);
            using var t = new Transformer(m, 1);
            using var session = new InferenceSession(t, KvCacheFactory.Create(StatePlan, t.CacheLayout(StateContext)));
            var prompt = m.Tokenizer!.Encode("Once upon a time", addBos: true).ToArray();
            session.Prefill(prompt);
            SessionStateFile.SaveFile(State, session, prompt, "{\"app\":1}");
        }

        public string Gguf => _dir.File("stories260K-q8_0.gguf");

        public string HfFolder => Directory.CreateDirectory(_dir.File("hf")).FullName;

        public string State => _dir.File("state.kvaq");

        public void Dispose() => _dir.Dispose();
    }

    private const string StatePlan = "k4v2";
    private const int StateContext = 32;

    /// <summary><paramref name="n"/> cases, times <c>KVAQ_FUZZ_SCALE</c> when set (a longer search: <c>KVAQ_FUZZ_SCALE=50</c>).</summary>
    private static int Iter(int n) => n * (int.TryParse(Environment.GetEnvironmentVariable("KVAQ_FUZZ_SCALE"), out int scale) && scale > 0 ? scale : 1);

    /// <summary>
    /// The project's error naming the file; or, from the forward pass, the cache's refusal of a value it cannot hold, which
    /// the engine also names the file in: a flipped byte in the weights can make a NaN or an infinity, which no loader
    /// looks for (it would have to read every weight).
    /// </summary>
    private static bool Named(Exception e, string path) => e is ModelFormatException or KvValueException && e.Message.Contains(path, StringComparison.Ordinal);

    /// <summary>A short use of a loaded model: a few tokens through the forward pass, the next token decoded.</summary>
    private static void Use(LlamaModel m)
    {
        using var t = new Transformer(m, 1);
        int ctx = Math.Min(8, m.Config.ContextLength);
        using var s = new InferenceSession(t, KvCacheFactory.Create("fp32", t.CacheLayout(ctx)));
        int[] tokens = m.Tokenizer is { } tok ? [.. tok.Encode("Once upon a time", addBos: true).Take(ctx)] : [];
        var logits = s.Prefill(tokens.Length > 0 ? tokens : [0]);
        int next = 0;
        for (int i = 1; i < logits.Length; i++)
        {
            next = logits[i] > logits[next] ? i : next;
        }

        m.Tokenizer?.DecodeBytes(tokens.Length > 0 ? tokens[^1] : -1, Math.Min(next, m.Tokenizer.VocabSize - 1));
    }

    private static string CaseDir(TempDir dir) => Directory.CreateDirectory(dir.File(Guid.NewGuid().ToString("N"))).FullName;

    // Each case's corrupted bytes (mutations drawn on mutate, or on layout) written as fileName in a folder of its own and
    // loaded by load: it loads and runs, or fails clearly (clear, by default Named).
    private static void FuzzFile(FileLayout layout, string fileName, int iterations, Action<string> load, Func<Exception, string, bool>? clear = null, FileLayout? mutate = null)
    {
        using var dir = new TempDir();
        FileCorruption.Mutations(mutate ?? layout).Sample(
            mutations =>
            {
                string path = Path.Combine(CaseDir(dir), fileName);
                File.WriteAllBytes(path, FileCorruption.Apply(layout, mutations));
                FileCorruption.Check(path, () => load(path), e => (clear ?? Named)(e, path));
            },
            iter: Iter(iterations),
            print: Print);
    }

    [Fact]
    public void CorruptGgufModelsFailClearly()
    {
        var layout = FileCorruption.GgufLayout(File.ReadAllBytes(files.Gguf));
        FuzzFile(layout, "model.gguf", 300, path =>
        {
            using var m = ModelLoader.Load(path);
            Use(m);
        });
    }

    [Fact]
    public void CorruptGgufTokenizersFailClearly()
    {
        var layout = FileCorruption.GgufLayout(File.ReadAllBytes(files.Gguf));
        var vocabHeader = layout with { HeaderEnd = layout.Fields.Where(f => f.Name.StartsWith("tokenizer.", StringComparison.Ordinal)).Max(f => f.Offset) + 8 };
        FuzzFile(layout, "tokenizer.gguf", 200, path =>
        {
            var tok = ModelLoader.LoadTokenizer(path, 512);
            var ids = tok.Encode("Once upon a time, hello!", addBos: true);
            tok.Decode(ids);
        }, mutate: vocabHeader);
    }

    [Fact]
    public void CorruptLlama2cCheckpointsFailClearly()
    {
        var fp32 = File.ReadAllBytes(Fixtures.Stories260K);
        var layout = new FileLayout(fp32, [.. Enumerable.Range(0, 7).Select(i => new FileField(i * 4, 4, $"header int {i}"))], [], 28);
        FuzzFile(layout, "model.bin", 200, path =>
        {
            using var m = ModelLoader.Load(path, Fixtures.Stories260KTokenizer);
            Use(m);
        });
    }

    [Fact]
    public void CorruptLlama2cInt8CheckpointsFailClearly()
    {
        var q80 = File.ReadAllBytes(Fixtures.Stories3M);
        var fields = new List<FileField> { new(0, 4, "magic"), new(4, 4, "version") };
        fields.AddRange(Enumerable.Range(0, 7).Select(i => new FileField(8 + (i * 4), 4, $"header int {i}")));
        fields.Add(new(36, 1, "shared classifier"));
        fields.Add(new(37, 4, "group size"));
        var layout = new FileLayout(q80, fields, [], 256);
        FuzzFile(layout, "model.bin", 40, path =>
        {
            using var m = ModelLoader.Load(path, Fixtures.Stories3MTokenizer);
            Use(m);
        });
    }

    [Fact]
    public void CorruptLlama2cTokenizersFailClearly()
    {
        var bytes = File.ReadAllBytes(Fixtures.Stories260KTokenizer);
        var fields = new List<FileField> { new(0, 4, "max token length") };
        for (int p = 4, i = 0; p < bytes.Length; i++)
        {
            int len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(p + 4));
            if (i < 8 || p + 8 + len == bytes.Length)
            {
                fields.Add(new(p, 4, $"token {i} score"));
                fields.Add(new(p + 4, 4, $"token {i} length"));
            }

            p += 8 + len;
        }

        var layout = new FileLayout(bytes, fields, [], bytes.Length);
        FuzzFile(layout, "tok512.bin", 200, path =>
        {
            var tok = ModelLoader.LoadTokenizer(path, 512);
            tok.Decode(tok.Encode("Once upon a time, hello!", addBos: true));
        });
    }

    [Fact]
    public void CorruptSafetensorsFailClearly()
    {
        string shard = Directory.GetFiles(files.HfFolder, "*.safetensors").Order(StringComparer.Ordinal).First();
        var bytes = File.ReadAllBytes(shard);
        int header = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var layout = new FileLayout(bytes, [new(0, 8, "header length")], [], 8 + header);
        string headerJson = Encoding.UTF8.GetString(bytes, 8, header);
        var data = bytes[(8 + header)..];
        using var dir = new TempDir();
        Gen.Select(Gen.Bool, FileCorruption.Mutations(layout), FileCorruption.JsonMutations).Sample(
            (binary, mutations, jsonMutations) =>
            {
                string folder = CopyFolder(files.HfFolder, CaseDir(dir));
                string path = Path.Combine(folder, Path.GetFileName(shard));
                if (binary)
                {
                    File.WriteAllBytes(path, FileCorruption.Apply(layout, mutations));
                }
                else
                {
                    var json = Encoding.UTF8.GetBytes(FileCorruption.Apply(headerJson, jsonMutations));
                    var length = new byte[8];
                    BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)json.Length);
                    File.WriteAllBytes(path, [.. length, .. json, .. data]);
                }

                LoadFolder(folder);
            },
            iter: Iter(200),
            print: t => t.Item1 ? Print(t.Item2) : Print(t.Item3));
    }

    [Theory]
    [InlineData("config.json", 250)]
    [InlineData("tokenizer.json", 200)]
    [InlineData(KvAdaQuant.Formats.Safetensors.HfModelLoader.IndexFileName, 100)]
    public void CorruptHfJsonFilesFailClearly(string file, int iterations)
    {
        string json = File.ReadAllText(Path.Combine(files.HfFolder, file));
        var bytes = Encoding.UTF8.GetBytes(json);
        var layout = new FileLayout(bytes, [], [], bytes.Length);
        using var dir = new TempDir();
        Gen.Select(Gen.Int[0, 3], FileCorruption.Mutations(layout), FileCorruption.JsonMutations).Sample(
            (kind, mutations, jsonMutations) =>
            {
                string folder = CopyFolder(files.HfFolder, CaseDir(dir));
                string path = Path.Combine(folder, file);
                if (kind == 0)
                {
                    File.WriteAllBytes(path, FileCorruption.Apply(layout, mutations));
                }
                else
                {
                    File.WriteAllText(path, FileCorruption.Apply(json, jsonMutations));
                }

                LoadFolder(folder);
            },
            iter: Iter(iterations),
            print: t => t.Item1 == 0 ? Print(t.Item2) : Print(t.Item3));
    }

    [Fact]
    public void CorruptSessionStatesFailClearly()
    {
        var layout = StateLayout(File.ReadAllBytes(files.State));
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        FuzzFile(layout, "state.kvaq", 300, path =>
        {
            using var t = new Transformer(model, 1);
            using var session = new InferenceSession(t, KvCacheFactory.Create(StatePlan, t.CacheLayout(StateContext)));
            var state = SessionStateFile.LoadFile(path, session);
            if (state.Tokens.Count < StateContext)
            {
                session.Decode(state.Tokens.Count > 0 ? state.Tokens[^1] : 1);
            }
        }, clear: (e, path) => e is InvalidDataException or KvCacheException && e.Message.Contains(path, StringComparison.Ordinal));
    }

    private static void LoadFolder(string folder) => FileCorruption.Check(folder, () =>
    {
        using var m = ModelLoader.Load(folder);
        Use(m);
    }, e => Named(e, folder));

    private static string CopyFolder(string from, string to)
    {
        foreach (var f in Directory.GetFiles(from))
        {
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        }

        return to;
    }

    private static string Print(Mutation[] m) => string.Join("; ", m.Select(x => x.ToString()));

    private static string Print(JsonMutation[] m) => string.Join("; ", m.Select(x => x.ToString()));

    /// <summary>The header fields of a state file (<see cref="SessionStateFile"/>'s format table), found by walking it.</summary>
    private static FileLayout StateLayout(byte[] b)
    {
        var fields = new List<FileField> { new(8, 4, "version") };
        int p = 12;
        int Int(string name)
        {
            fields.Add(new(p, 4, name));
            int v = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(p));
            p += 4;
            return v;
        }

        void Str(string name)
        {
            int length = Int(name + " length");
            p += length;
        }

        int n = Int("fingerprint count");
        for (int i = 0; i < n; i++)
        {
            Str($"fingerprint name {i}");
            int at = p;
            Str($"fingerprint value {i}");
            fields.Add(new(at + 4, 1, $"fingerprint value {i} first byte"));
        }

        Str("plan description");
        Int("capacity");
        int layers = Int("layers");
        for (int i = 0; i < layers * 2; i++)
        {
            fields.Add(new(p, 1, $"spec {i} bits"));
            p += 1;
            Int($"spec {i} group");
            fields.Add(new(p, 1, $"spec {i} axis"));
            fields.Add(new(p + 1, 1, $"spec {i} flags"));
            p += 2;
            Int($"spec {i} residual");
            Int($"spec {i} sinks");
        }

        int tokens = Int("token count");
        for (int i = 0; i < tokens; i++)
        {
            Int($"token {i}");
        }

        int logits = Int("logit count");
        p += 4 * logits;
        Str("application data");
        return new FileLayout(b, fields, [], p);
    }
}
