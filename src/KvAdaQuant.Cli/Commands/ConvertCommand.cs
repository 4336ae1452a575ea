using System.CommandLine;
using System.Diagnostics;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.Numerics;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq convert</c>: any model kvaq loads (llama2.c fp32/int8, GGUF, a Hugging Face folder) with its tokenizer to GGUF
/// (re-quantized to <c>--type</c>), to a Hugging Face folder or to a llama2.c fp32 checkpoint with its <c>tok{vocab}.bin</c>;
/// or a synthetic preset with seeded random weights to GGUF.
/// </summary>
internal static class ConvertCommand
{
    private const string GgufTypes = "f32, f16, bf16, q8_0, q4_0, q4_k_m, q4_k_s, q6_k, q2_k, q3_k_s, q3_k_m, q3_k_l, q5_k_s, q5_k_m, iq4_nl, iq4_xs, q4_1, q5_1, q5_0";

    private enum OutputFormat
    {
        Gguf,
        Hf,
        Llama2c,
    }

    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "model to convert: a llama2.c .bin, a .gguf file or a Hugging Face folder (file, folder or bare name)" };
        var synthetic = new Option<string?>("--synthetic") { Description = $"write seeded random weights in the shape of a preset (GGUF only): {SyntheticModelPreset.Names}" };
        var output = new Option<string>("--out", "-o") { Description = "output: a .gguf file, a folder for a Hugging Face model (config.json, model.safetensors, tokenizer.json), or a llama2.c .bin (tok{vocab}.bin written beside it)", Required = true };
        var format = new Option<string?>("--format") { Description = "gguf, hf or llama2c (default: gguf for a path ending in .gguf, llama2c for one ending in .bin, hf for an existing folder or a path ending in /)" };
        var type = new Option<string>("--type")
        {
            Description = "GGUF: f32, f16, bf16, q8_0 or q4_0 (norms stay f32); q4_k_m, q4_k_s, q6_k, q2_k, q3_k_s, q3_k_m, q3_k_l, q5_k_s, q5_k_m, iq4_nl, iq4_xs, q4_1, q5_1 or q5_0: quantized by llama.cpp through LLamaSharp from the f16 (synthetic) or f32 file kvaq writes first. Hugging Face: f32, f16 or bf16 (norms and biases stay f32). llama2.c: f32",
            DefaultValueFactory = _ => "f32",
        };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer to carry over: a tokenizer.json, a .gguf holding a vocabulary, or a llama2.c tokenizer.bin (default: the model's own)" };
        var maxShardSize = new Option<string?>("--max-shard-size") { Description = "Hugging Face folders: the largest shard's tensor data, as transformers' max_shard_size (5GB, 500MB, 200KB, 2GiB or bytes; default 5GB); past it model-0000i-of-0000N.safetensors and model.safetensors.index.json" };
        var seed = new Option<ulong>("--seed") { Description = "random seed for --synthetic", DefaultValueFactory = _ => 1UL };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("convert", "Convert a model (llama2.c, GGUF or a Hugging Face folder) with its tokenizer to GGUF (re-quantizing it) or to a Hugging Face folder, or write a synthetic GGUF model of a preset's shape.")
        {
            model, synthetic, output, format, type, tokenizer, maxShardSize, seed, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            string typeName = r.GetValue(type)!.ToLowerInvariant();
            string? preset = r.GetValue(synthetic);
            string? modelName = r.GetValue(model);
            var outPath = r.GetValue(output)!;
            var outFormat = ResolveFormat(r.GetValue(format), outPath);
            long shardSize = HfModelExporter.DefaultMaxShardSize;
            if (r.GetValue(maxShardSize) is { } sizeText)
            {
                if (outFormat != OutputFormat.Hf)
                {
                    throw new ArgumentException("--max-shard-size: applies to Hugging Face folders (--format hf) only; a GGUF file is written whole");
                }

                shardSize = HfModelExporter.ParseMaxShardSize(sizeText);
            }

            switch (outFormat)
            {
                case OutputFormat.Gguf:
                    // A file path (not empty, not a folder) in a folder that exists; an existing file is replaced.
                    OutputTransaction.CheckFile("--out", outPath, "model.gguf", ", or --format hf to write a Hugging Face folder there");
                    break;
                case OutputFormat.Llama2c:
                    OutputTransaction.CheckFile("--out", outPath, "model.bin", ", or --format hf to write a Hugging Face folder there");
                    if (typeName != "f32")
                    {
                        throw new ArgumentException($"--type: '{typeName}' cannot be written to a llama2.c checkpoint, which kvaq writes in llama2.c's legacy fp32 layout only (f32; quantized models are dequantized)");
                    }

                    break;
                default:
                    CheckHfOutputFolder(outPath);
                    break;
            }

            if ((preset is null) == (modelName is null))
            {
                throw new ArgumentException("convert: give exactly one of --model F or --synthetic <preset>");
            }

            if (outFormat != OutputFormat.Gguf && preset is not null)
            {
                throw new ArgumentException($"--synthetic writes GGUF only; give --out F.gguf (then convert that file with --model F.gguf --out {outPath})");
            }

            bool asJson = r.GetValue(json);
            int lastPercent = -1;
            var progress = asJson ? null : new Progress<double>(f =>
            {
                int pc = (int)(f * 100);
                if (pc / 10 != lastPercent / 10)
                {
                    lastPercent = pc;
                    Console.Error.Write($"\r{pc,3}%");
                }
            });
            int nThreads = r.GetValue(threads);
            var sw = Stopwatch.StartNew();

            // A failed or interrupted conversion (Ctrl+C, SIGTERM) removes its temporary files and folder and leaves
            // what was at --out as it was.
            using var transaction = new OutputTransaction();
            var result = outFormat switch
            {
                OutputFormat.Gguf => ToGguf(modelName, preset, r.GetValue(seed), r.GetValue(tokenizer), outPath, typeName, nThreads, progress, transaction),
                OutputFormat.Llama2c => ToLlama2c(modelName!, r.GetValue(tokenizer), outPath, nThreads, progress, transaction),
                _ => ToHf(modelName!, r.GetValue(tokenizer), outPath, ParseHfType(typeName), shardSize, nThreads, progress, transaction),
            };
            double seconds = sw.Elapsed.TotalSeconds;
            if (asJson)
            {
                CliRunner.PrintJson(new { result.Source, Out = Path.GetFullPath(outPath), Format = outFormat.ToString().ToLowerInvariant(), result.Type, result.Tensors, result.Bytes, Seconds = seconds });
            }
            else
            {
                Console.Error.WriteLine();
                Console.Out.WriteLine($"wrote {outPath}: {result.Tensors} tensors, {result.Bytes:N0} bytes, {result.Written} from {result.Source} in {seconds:F1} s");
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// Writes the GGUF file: the writer writes <c>F.partial</c> and renames it; the llama.cpp types write <c>F.unquantized</c>
    /// that way and quantize it into <c>F.partial</c>, renamed by <paramref name="transaction"/>'s commit.
    /// </summary>
    private static Result ToGguf(string? modelName, string? preset, ulong seed, string? tokenizerPath, string outPath, string typeName, int threads, IProgress<double>? progress, OutputTransaction transaction)
    {
        bool byLlamaCpp = LlamaCppConvertQuantizer.TypeNames.Contains(typeName);
        var t = byLlamaCpp ? (preset is not null ? GgmlType.F16 : GgmlType.F32) : ParseGgufType(typeName);
        var writePath = byLlamaCpp ? outPath + ".unquantized" : outPath;
        transaction.DeleteOnRollback(GgufWriter.TemporaryPath(writePath));
        if (byLlamaCpp)
        {
            transaction.DeleteOnRollback(writePath);
        }

        GgufWriter writer;
        string source;
        Model.LlamaModel? loaded = null;
        try
        {
            if (preset is not null)
            {
                var p = SyntheticModelPreset.Find(preset);
                writer = SyntheticModelWriter.Create(p, t, seed);
                source = $"synthetic {p.Name}";
            }
            else
            {
                // A GGUF input without --tokenizer keeps its tokenizer.* keys verbatim (ConvertedTokenizer.ToGguf copies them), so
                // its tokenizer is not built: a kind kvaq does not implement (rwkv, t5, ...) is carried over all the same.
                loaded = ModelLoader.Load(modelName!, tokenizerPath, ggufTokenizer: false);
                if (Path.GetFullPath(loaded.Path) == Path.GetFullPath(outPath))
                {
                    throw new ArgumentException($"--out {outPath}: is the model being converted; write to another file");
                }

                var tokenizer = ConvertedTokenizer.ToGguf(loaded, tokenizerPath);
                writer = loaded.Format == "gguf" ? FromGguf(loaded, tokenizer, t) : GgufModelExporter.FromModel(loaded, tokenizer, t, NameOf(loaded), GgufArchitecture(loaded));
                source = loaded.Path;
            }

            long bytes = writer.Write(writePath, threads, progress);
            string written = t.ToString();
            if (byLlamaCpp)
            {
                try
                {
                    LlamaCppConvertQuantizer.Quantize(writePath, transaction.Temporary(outPath), typeName, threads > 0 ? threads : Environment.ProcessorCount);
                }
                finally
                {
                    File.Delete(writePath);
                }

                transaction.Commit();
                bytes = new FileInfo(outPath).Length;
                written = $"{typeName.ToUpperInvariant()} (quantized by llama.cpp through LLamaSharp from {t})";
            }
            else
            {
                transaction.Commit();
            }

            return new Result(source, byLlamaCpp ? typeName.ToUpperInvariant() : t.ToString(), writer.TensorCount, bytes, written);
        }
        finally
        {
            loaded?.Dispose();
        }
    }

    /// <summary>
    /// A GGUF model re-encoded as llama-quantize does: same architecture, its <c>general.*</c> description and its tokenizer
    /// keys (every <c>tokenizer.*</c> key with its GGUF type, whatever the tokenizer kind, unless <c>--tokenizer</c> replaced
    /// them) copied unchanged, matrices in the new type.
    /// </summary>
    private static GgufWriter FromGguf(Model.LlamaModel loaded, GgufTokenizerMetadata tokenizer, GgmlType t)
    {
        using var g = GgufFile.Open(loaded.Path);
        var writer = GgufModelExporter.FromModel(loaded, tokenizer, t, g.GetString("general.name") ?? NameOf(loaded));
        foreach (var key in g.MetadataKeys.Where(k => k.StartsWith("general.", StringComparison.Ordinal)
            && k is not ("general.architecture" or "general.name" or "general.alignment" or "general.file_type" or "general.quantization_version")))
        {
            writer.Copy(g, key);
        }

        return writer;
    }

    /// <summary>Writes the Hugging Face folder as <c>DIR.partial-PID</c>, renamed at the end; a rollback of <paramref name="transaction"/> deletes it.</summary>
    private static Result ToHf(string modelName, string? tokenizerPath, string outPath, string dtype, long maxShardSize, int threads, IProgress<double>? progress, OutputTransaction transaction)
    {
        using var loaded = ModelLoader.Load(modelName, tokenizerPath);
        var full = Path.GetFullPath(outPath.TrimEnd('/', Path.DirectorySeparatorChar));
        var partial = $"{full}.partial-{Environment.ProcessId}";
        OutputTransaction.RemoveStalePartialFolders(full);
        if (Directory.Exists(partial))
        {
            Directory.Delete(partial, recursive: true);
        }

        transaction.DeleteOnRollback(partial);
        Directory.CreateDirectory(partial);
        var files = ConvertedTokenizer.WriteHfFiles(loaded, tokenizerPath, partial);
        long bytes = HfModelExporter.Write(loaded, partial, dtype, threads, progress, maxShardSize);
        bytes += files.Sum(f => new FileInfo(Path.Combine(partial, f)).Length);
        int tensors = 0, shards = 0;
        foreach (var shard in Directory.EnumerateFiles(partial, "*.safetensors"))
        {
            using var st = SafetensorsFile.Open(shard);
            tensors += st.Tensors.Count;
            shards++;
        }

        if (Directory.Exists(full))
        {
            Directory.Delete(full); // empty, checked before any work
        }

        Directory.Move(partial, full);
        transaction.Commit();
        return new Result(loaded.Path, dtype, tensors, bytes, $"{dtype} safetensors{(shards > 1 ? $" ({shards} shards + index)" : string.Empty)} + config.json + {string.Join(" + ", files)}");
    }

    /// <summary>
    /// Writes the llama2.c fp32 checkpoint and <c>tok{vocab}.bin</c> beside it, each as <c>NAME.partial</c> renamed by
    /// <paramref name="transaction"/>'s commit. A <c>tok{vocab}.bin</c> already there is kept when it holds the same bytes and
    /// refused when it holds another tokenizer (the model would be read with it).
    /// </summary>
    private static Result ToLlama2c(string modelName, string? tokenizerPath, string outPath, int threads, IProgress<double>? progress, OutputTransaction transaction)
    {
        using var loaded = ModelLoader.Load(modelName, tokenizerPath, ggufTokenizer: false);
        if (Path.GetFullPath(loaded.Path) == Path.GetFullPath(outPath))
        {
            throw new ArgumentException($"--out {outPath}: is the model being converted; write to another file");
        }

        var c = loaded.Config;
        Llama2cExporter.CheckRepresentable(c, loaded.Weights, loaded.Path);
        var metadata = ConvertedTokenizer.ToGguf(loaded, tokenizerPath);
        var tokenizerBytes = Llama2cExporter.TokenizerBytes(metadata, c.VocabSize);
        var tokenizerFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outPath))!, Llama2cExporter.TokenizerFileName(c.VocabSize));
        if (tokenizerFile == Path.GetFullPath(outPath))
        {
            throw new ArgumentException($"--out {outPath}: is the name of the tokenizer written beside the checkpoint; give the checkpoint another name");
        }

        string checkedFile = tokenizerFile;
        bool writeTokenizer = true;
        if (File.Exists(tokenizerFile))
        {
            if (!File.ReadAllBytes(tokenizerFile).AsSpan().SequenceEqual(tokenizerBytes))
            {
                throw new ArgumentException($"--out {outPath}: {tokenizerFile} beside it holds another tokenizer, which would be read with the checkpoint; write to another folder (or remove that file)");
            }

            writeTokenizer = false;
        }
        else
        {
            checkedFile = transaction.Temporary(tokenizerFile);
            File.WriteAllBytes(checkedFile, tokenizerBytes);
        }

        // The tokenizer as llama2.c (and kvaq's llama2.c tokenizer) reads it must encode like the one it came from.
        TokenizerEquivalence.Verify(GgufTokenizerFactory.Create(metadata), Llama2cTokenizer.Load(checkedFile, c.VocabSize), $"{metadata.Source}: the tokenizer written as {Path.GetFileName(tokenizerFile)}", Llama2cExporter.SpecialTokens(metadata));
        long bytes = Llama2cExporter.Write(loaded, transaction.Temporary(outPath), threads, progress);
        transaction.Commit();
        int tensors = 2 + (9 * c.Layers) + (c.TiedEmbeddings ? 0 : 1);
        string tokenizerNote = writeTokenizer ? $"{Path.GetFileName(tokenizerFile)}" : $"{Path.GetFileName(tokenizerFile)} (already there, the same)";
        return new Result(loaded.Path, "F32", tensors, bytes + (writeTokenizer ? tokenizerBytes.Length : 0), $"llama2.c fp32 checkpoint + {tokenizerNote}");
    }

    /// <summary>The GGUF architecture a model is written as: Hugging Face's mistral becomes llama, as llama.cpp's converter writes it.</summary>
    private static string GgufArchitecture(Model.LlamaModel m) => m.Format == "safetensors" && m.Config.Architecture == "mistral" ? "llama" : m.Config.Architecture;

    private static string NameOf(Model.LlamaModel m) => Path.GetFileNameWithoutExtension(m.Path.TrimEnd('/', Path.DirectorySeparatorChar));

    private static OutputFormat ResolveFormat(string? format, string outPath)
    {
        switch (format?.ToLowerInvariant())
        {
            case "gguf":
                return OutputFormat.Gguf;
            case "hf":
                return OutputFormat.Hf;
            case "llama2c":
                return OutputFormat.Llama2c;
            case null:
                break;
            default:
                throw new ArgumentException($"--format: '{format}' is not gguf, hf or llama2c");
        }

        if (string.IsNullOrWhiteSpace(outPath))
        {
            throw new ArgumentException("--out: the path is empty; give a .gguf file or a folder to write");
        }

        if (outPath.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        {
            return OutputFormat.Gguf;
        }

        if (outPath.EndsWith(".bin", StringComparison.OrdinalIgnoreCase))
        {
            return OutputFormat.Llama2c;
        }

        if (Directory.Exists(outPath) || outPath.EndsWith('/') || outPath.EndsWith(Path.DirectorySeparatorChar))
        {
            return OutputFormat.Hf;
        }

        throw new ArgumentException($"--out {outPath}: cannot tell the output format; end the file name in .gguf for GGUF or .bin for a llama2.c checkpoint, or give --format hf to write a Hugging Face folder there (--format gguf for a GGUF file of that name)");
    }

    /// <summary>
    /// Checks <c>--out</c> for a Hugging Face folder before any work: a new folder in one that exists, or an existing empty
    /// folder (never a file, nor a folder holding anything: stale shards beside the new weights would be loaded with them).
    /// </summary>
    private static void CheckHfOutputFolder(string path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new ArgumentException("--out: the path is empty; give the folder to write");
        }

        if (File.Exists(path))
        {
            throw new ArgumentException($"--out {path}: is a file; a Hugging Face model is written to a folder (a new one, or an empty one)");
        }

        if (Directory.Exists(path))
        {
            if (Directory.EnumerateFileSystemEntries(path).Any())
            {
                throw new ArgumentException($"--out {path}: the folder is not empty; give a new or empty folder (files already there, such as other *.safetensors shards, would be read with the new model)");
            }

            return;
        }

        string? parent = Path.GetDirectoryName(Path.GetFullPath(path.TrimEnd('/', Path.DirectorySeparatorChar)));
        if (parent is not null && !Directory.Exists(parent))
        {
            throw new ArgumentException($"--out {path}: the folder {parent} does not exist");
        }
    }

    private static GgmlType ParseGgufType(string s) => s switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        "bf16" => GgmlType.BF16,
        "q8_0" => GgmlType.Q8_0,
        "q4_0" => GgmlType.Q4_0,
        _ => throw new ArgumentException($"--type: '{s}' is not one of {GgufTypes}"),
    };

    private static string ParseHfType(string s) => s switch
    {
        "f32" => "F32",
        "f16" => "F16",
        "bf16" => "BF16",
        _ => throw new ArgumentException($"--type: '{s}' cannot be written to a Hugging Face folder, which holds f32, f16 or bf16 weights (quantized models are dequantized); {GgufTypes} are for .gguf files"),
    };

    private sealed record Result(string Source, string Type, int Tensors, long Bytes, string Written);
}
