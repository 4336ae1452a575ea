using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary>Options shared by several commands.</summary>
internal static class CommonOptions
{
    public static Option<string> Model() => new("--model", "-m")
    {
        Description = $"model file, folder or bare name (looked up in $KVAQ_MODELS, then ../shared/models); default {ModelPaths.DefaultModel}",
        DefaultValueFactory = _ => ModelPaths.DefaultModel,
    };

    public static Option<string?> Tokenizer() => new("--tokenizer")
    {
        Description = "tokenizer file (default: the one in or beside the model)",
    };

    public static Option<bool> Json() => new("--json")
    {
        Description = "print machine-readable JSON to stdout",
    };

    /// <summary>The largest <c>--threads</c> accepted (a pool thread each; far more than any CPU here has cores).</summary>
    public const int MaxThreads = KvAdaQuant.Numerics.WorkerPool.MaxThreads;

    public static Option<int> Threads(int defaultValue = 0, string description = "worker threads (0 = all cores)")
    {
        var option = new Option<int>("--threads", "-t")
        {
            Description = $"{description}; at most {MaxThreads}",
            DefaultValueFactory = _ => defaultValue,
        };
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && !int.TryParse(result.Tokens[^1].Value, out _))
            {
                return; // not a number: the parser reports it ("Cannot parse argument ... for option '--threads'")
            }

            int value = result.GetValueOrDefault<int>();
            if (value < 0 || value > MaxThreads)
            {
                result.AddError($"--threads must be 0 (all cores) or 1-{MaxThreads}, got {value}");
            }
        });
        return option;
    }

    public static Option<string?> Kv() => new("--kv")
    {
        Description = "KV cache: fp32 (default), fp16, or k<bits>v<bits>[:g<N>][:r<N>][:sink<N>][:asym|:sym][:pt|:pc] with bits 1, 1.58, 2, 3, 4, 5, 6, 8, 16, 32 (e.g. k4v2, k8v8:g32:sym, k2v2:kpc:g32:r32); options prefixed k or v apply to one side",
    };

    public static Option<string?> KvPlan() => new("--kv-plan")
    {
        Description = "JSON file with a K and V spec per layer (see the README); exclusive with --kv",
    };

    /// <summary>
    /// The files of a comma-separated <c>--kv-plan</c> list (<c>kvaq compare</c>, <c>kvaq verify-decode</c>), loaded: none
    /// when the option is absent (null), an error when it is given but names no file (<c>--kv-plan ''</c>).
    /// </summary>
    public static List<(string Path, KvAdaQuant.KvCache.KvPlan Plan)> LoadPlanList(string? list)
    {
        if (list is null)
        {
            return [];
        }

        string[] paths = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (paths.Length == 0)
        {
            throw new ArgumentException($"--kv-plan '{list}': no plan files (expected plan.json or a.json,b.json)");
        }

        return paths.Select(p => (p, KvAdaQuant.KvCache.KvPlan.Load(p))).ToList();
    }

    /// <summary><c>--attn-int8</c>: int8 queries and integer dot products for the attention scores over quantized keys.</summary>
    /// <summary>
    /// <c>--ubatch N</c>: tokens per forward pass of a prefill on the CPU (llama.cpp's <c>-ub</c>); default
    /// <see cref="InferenceSession.BatchSize"/>'s choice.
    /// </summary>
    public static Option<int?> Ubatch() => new("--ubatch")
    {
        Description = $"prefill tokens per forward pass (llama.cpp's -ub); on the CPU default {InferenceSession.FullPrecisionBatchSize} where the cache's results do not depend on it (FP16/FP32, per-token specs without a residual window) and the activations fit in 8 MiB, else {InferenceSession.QuantizedBatchSize}; with --device cuda positions per prefill pass, default {KvAdaQuant.Gpu.Decode.CudaDecoder.DefaultPrefillChunk} (at most {KvAdaQuant.Gpu.Decode.CudaDecoder.MaxChunkRows} rows over the batch; 1 = position by position)",
    };

    /// <summary>The <c>--ubatch</c> value checked: null (the default) or at least 1.</summary>
    public static int? CheckUbatch(int? value) =>
        value is < 1 ? throw new ArgumentException($"--ubatch must be at least 1, got {value}") : value;

    /// <summary>A session with <c>--ubatch</c> applied (null keeps <see cref="InferenceSession.BatchSize"/>'s default).</summary>
    public static InferenceSession Session(Transformer transformer, IKvCache cache, int? ubatch) =>
        ubatch is { } b ? new InferenceSession(transformer, cache) { BatchSize = b } : new InferenceSession(transformer, cache);

    public static Option<bool> AttnInt8() => new("--attn-int8")
    {
        Description = "attention scores with int8 queries (one FP32 step per key group, like llama.cpp's Q8_0) and integer dot products (AVX-512BW; AVX-VNNI where present) over the packed keys; needs quantized keys (2, 4 or 8 bits, per token); layers whose keys do not qualify keep FP32 attention",
    };

    /// <summary><c>--attn-int8-values</c>: <c>--attn-int8</c>, and value sums with byte softmax weights over 2-bit values.</summary>
    public static Option<bool> AttnInt8Values() => new("--attn-int8-values")
    {
        Description = "--attn-int8, and the weighted value sum over 2- or 4-bit values with the softmax weights times the value steps rounded to bytes per 64 tokens (vpmaddubsw, AVX-512 VBMI); layers whose values are not 2- or 4-bit per-token groups the kernel takes (2-bit: groups of 32 or 64+ channels; 4-bit: multiples of 32) keep the FP32 value sum",
    };

    /// <summary>The precision <c>--attn-int8</c> and <c>--attn-int8-values</c> select (the latter implies the former).</summary>
    public static KvAdaQuant.KvCache.AttentionPrecision Attention(bool int8, bool values = false) =>
        values ? KvAdaQuant.KvCache.AttentionPrecision.Int8Values
        : int8 ? KvAdaQuant.KvCache.AttentionPrecision.Int8 : KvAdaQuant.KvCache.AttentionPrecision.Fp32;

    /// <summary>The flag that selected <paramref name="attention"/> (for error messages): <c>--attn-int8-values</c> or <c>--attn-int8</c>.</summary>
    public static string AttentionFlag(KvAdaQuant.KvCache.AttentionPrecision attention) =>
        attention == KvAdaQuant.KvCache.AttentionPrecision.Int8Values ? "--attn-int8-values" : "--attn-int8";

    /// <summary>The <c>"attention"</c> value of the JSON outputs: <c>int8-values</c>, <c>int8</c> or <c>fp32</c>.</summary>
    /// <summary>
    /// Prints a note on stderr when a quantized spec of <paramref name="plan"/> would never quantize a position of a
    /// <paramref name="capacity"/>-position context (a residual window or sinks as long as the context): the run is then
    /// an FP16 run under a quantized name.
    /// </summary>
    public static void NoteIfNeverQuantized(KvAdaQuant.KvCache.KvPlan plan, int capacity) => NoteIfNeverQuantized(plan, [capacity]);

    /// <summary>
    /// The note of <see cref="NoteIfNeverQuantized(KvAdaQuant.KvCache.KvPlan, int)"/> for a run over several context
    /// lengths (bench's <c>--ctx</c> list): printed once, for the longest of them that the plan never quantizes.
    /// </summary>
    public static void NoteIfNeverQuantized(KvAdaQuant.KvCache.KvPlan plan, IEnumerable<int> capacities)
    {
        foreach (int capacity in capacities.Where(c => c > 0).Distinct().OrderDescending())
        {
            if (plan.NeverQuantized(capacity) is { } why)
            {
                Console.Error.WriteLine($"kvaq: note: {plan.Name}: {why}");
                return;
            }
        }
    }

    public static string AttentionName(KvAdaQuant.KvCache.AttentionPrecision attention) => attention switch
    {
        KvAdaQuant.KvCache.AttentionPrecision.Int8Values => "int8-values",
        KvAdaQuant.KvCache.AttentionPrecision.Int8 => "int8",
        _ => "fp32",
    };

    /// <summary>The text file of <c>kvaq perplexity</c> and <c>kvaq compare</c>.</summary>
    public static Option<string> TextData() => new("--data", "-f")
    {
        Description = "text file (a path, or relative to ../shared/data)",
        Required = true,
    };

    /// <summary>Tokens per perplexity chunk.</summary>
    public static Option<int> ChunkContext() => new("--ctx", "-c")
    {
        Description = "tokens per chunk",
        DefaultValueFactory = _ => 512,
    };

    /// <summary>A prefix of the text file.</summary>
    public static Option<int> Chars() => new("--chars")
    {
        Description = "use only the first N characters of the file (0 = all)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>At most this many perplexity chunks.</summary>
    public static Option<int> Chunks() => new("--chunks")
    {
        Description = "score at most N chunks (0 = all)",
        DefaultValueFactory = _ => 0,
    };
}
