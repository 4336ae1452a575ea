using System.CommandLine;
using System.Diagnostics;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// <c>kvaq convert</c>: a model (llama2.c fp32/int8 or GGUF) with its llama2.c tokenizer to GGUF, or a
/// synthetic preset with seeded random weights to GGUF.
/// </summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "model to convert (file or bare name)" };
        var synthetic = new Option<string?>("--synthetic") { Description = $"write seeded random weights in the shape of a preset: {SyntheticModelPreset.Names}" };
        var output = new Option<string>("--out", "-o") { Description = "output .gguf file", Required = true };
        var type = new Option<string>("--type")
        {
            Description = "matrix type: f32, f16, q8_0 or q4_0 (norms stay f32); q4_k_m, q4_k_s or q6_k: quantized by llama.cpp through LLamaSharp from the f16 (synthetic) or f32 file kvaq writes first",
            DefaultValueFactory = _ => "f32",
        };
        var tokenizer = CommonOptions.Tokenizer();
        var seed = new Option<ulong>("--seed") { Description = "random seed for --synthetic", DefaultValueFactory = _ => 1UL };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("convert", "Convert a llama2.c model (with its tokenizer) to GGUF, or write a synthetic GGUF model of a preset's shape.")
        {
            model, synthetic, output, type, tokenizer, seed, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            string typeName = r.GetValue(type)!.ToLowerInvariant();
            string? preset = r.GetValue(synthetic);
            bool byLlamaCpp = LlamaCppConvertQuantizer.TypeNames.Contains(typeName);
            var t = byLlamaCpp ? (preset is not null ? GgmlType.F16 : GgmlType.F32) : ParseType(typeName);
            var outPath = CheckOutputPath(r.GetValue(output)!);
            var writePath = byLlamaCpp ? outPath + ".unquantized" : outPath;
            string? modelName = r.GetValue(model);
            if ((preset is null) == (modelName is null))
            {
                throw new ArgumentException("convert: give exactly one of --model F or --synthetic <preset>");
            }

            var sw = Stopwatch.StartNew();
            GgufWriter writer;
            string source;
            Model.LlamaModel? loaded = null;
            try
            {
                if (preset is not null)
                {
                    var p = SyntheticModelPreset.Find(preset);
                    writer = SyntheticModelWriter.Create(p, t, r.GetValue(seed));
                    source = $"synthetic {p.Name}";
                }
                else
                {
                    loaded = ModelLoader.Load(modelName!, null);
                    var tokPath = r.GetValue(tokenizer) ?? ModelLoader.FindLlama2cTokenizer(loaded.Path, loaded.Config.VocabSize)
                        ?? throw new ArgumentException($"--tokenizer: no llama2.c tokenizer (tok{loaded.Config.VocabSize}.bin or tokenizer.bin) beside {loaded.Path}; pass one");
                    var vocab = GgufVocabulary.FromLlama2cTokenizer(tokPath, loaded.Config.VocabSize);
                    writer = GgufModelExporter.FromModel(loaded, vocab, t, Path.GetFileNameWithoutExtension(loaded.Path));
                    source = loaded.Path;
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
                long bytes = writer.Write(writePath, r.GetValue(threads), progress);
                string written = t.ToString();
                if (byLlamaCpp)
                {
                    try
                    {
                        int n = r.GetValue(threads);
                        LlamaCppConvertQuantizer.Quantize(writePath, outPath, typeName, n > 0 ? n : Environment.ProcessorCount);
                    }
                    finally
                    {
                        File.Delete(writePath);
                    }

                    bytes = new FileInfo(outPath).Length;
                    written = $"{typeName.ToUpperInvariant()} (quantized by llama.cpp through LLamaSharp from {t})";
                }

                double seconds = sw.Elapsed.TotalSeconds;
                if (asJson)
                {
                    CliRunner.PrintJson(new { Source = source, Out = Path.GetFullPath(outPath), Type = byLlamaCpp ? typeName.ToUpperInvariant() : t.ToString(), Tensors = writer.TensorCount, Bytes = bytes, Seconds = seconds });
                }
                else
                {
                    Console.Error.WriteLine();
                    Console.Out.WriteLine($"wrote {outPath}: {writer.TensorCount} tensors, {bytes:N0} bytes, {written} from {source} in {seconds:F1} s");
                }
            }
            finally
            {
                loaded?.Dispose();
            }

            return 0;
        }));
        return cmd;
    }

    /// <summary>Checks <c>--out</c> before any work: a file path (not empty, not a folder) in a folder that exists.</summary>
    private static string CheckOutputPath(string path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new ArgumentException("--out: the path is empty; give the .gguf file to write");
        }

        if (Directory.Exists(path))
        {
            throw new ArgumentException($"--out {path}: is a folder; give a file path such as {Path.Combine(path, "model.gguf")}");
        }

        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder))
        {
            throw new ArgumentException($"--out {path}: the folder {folder} does not exist");
        }

        return path;
    }

    private static GgmlType ParseType(string s) => s.ToLowerInvariant() switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        "q8_0" => GgmlType.Q8_0,
        "q4_0" => GgmlType.Q4_0,
        _ => throw new ArgumentException($"--type: '{s}' is not one of f32, f16, q8_0, q4_0, {string.Join(", ", LlamaCppConvertQuantizer.TypeNames)}"),
    };
}
