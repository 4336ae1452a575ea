using KvAdaQuant.Engine;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// The engine <c>chat</c> and <c>serve</c> decode on: the CPU <see cref="Transformer"/> with an <see cref="InferenceSession"/>,
/// or with <c>--device cuda</c> a batch-1 <see cref="CudaDecoder"/> through <see cref="CudaDecodeSession"/> (fp16 unless
/// <c>--kv</c> or <c>--kv-plan</c> says otherwise, as <c>generate</c>; sampling on the host). Disposes what it opened.
/// </summary>
internal sealed class DecodeEngine : IDisposable
{
    private readonly CudaContext? _context;
    private readonly CudaDecoder? _decoder;
    private readonly Transformer? _transformer;
    private readonly InferenceSession? _cpu;
    private readonly IReadOnlyList<InferenceSession> _more;

    private DecodeEngine(CudaContext? context, CudaDecoder? decoder, Transformer? transformer, InferenceSession? cpu, IDecodeSession session, IReadOnlyList<InferenceSession>? more = null, IReadOnlyList<IDecodeSession>? sessions = null)
    {
        _context = context;
        _decoder = decoder;
        _transformer = transformer;
        _cpu = cpu;
        _more = more ?? [];
        Session = session;
        Sessions = sessions ?? [session];
    }

    /// <summary>The session to decode on.</summary>
    public IDecodeSession Session { get; }

    /// <summary>
    /// The sessions of <c>serve --parallel N</c>: N caches on one engine whose decode steps run together
    /// (<see cref="BatchingEngine"/>); <see cref="Session"/> alone otherwise.
    /// </summary>
    public IReadOnlyList<IDecodeSession> Sessions { get; }

    /// <summary>The engine batching the decode steps of <see cref="Sessions"/> (with more than one), else null.</summary>
    public BatchingEngine? Batching { get; private init; }

    /// <summary>Whether it runs on the GPU.</summary>
    public bool OnGpu => _decoder is not null;

    /// <summary>The KV cache's name: the CPU cache's description, or the GPU layout's name.</summary>
    public string KvName => _cpu is not null ? _cpu.Cache.Description : _decoder!.Layout.Name;

    /// <summary>The KV cache for banners: the CPU cache's description, or the GPU layout followed by "on the GPU".</summary>
    public string KvDescription => _cpu is not null ? _cpu.Cache.Description : $"{_decoder!.Layout} on the GPU";

    /// <summary>CPU threads, or 0 on the GPU.</summary>
    public int Threads => _transformer?.Threads ?? 0;

    /// <summary>The CPU engine (null on the GPU).</summary>
    public Transformer? Transformer => _transformer;

    /// <summary>
    /// Opens the engine for <paramref name="ctx"/> positions. On the GPU it prints the <c>[cuda: ...]</c> line; on the CPU
    /// the never-quantized note where it applies. <paramref name="precision"/> other than FP32 is refused on the GPU.
    /// </summary>
    public static DecodeEngine Open(LlamaModel m, string? kvText, string? planPath, bool onGpu, int threads, int ctx, AttentionPrecision precision = AttentionPrecision.Fp32, int parallel = 1, int? ubatch = null)
    {
        CommonOptions.CheckUbatch(ubatch);
        if (parallel < 1)
        {
            throw new ArgumentException($"--parallel must be at least 1, got {parallel}");
        }

        if (onGpu && parallel > 1)
        {
            throw new ArgumentException($"--parallel {parallel} decodes several requests in one forward pass of the CPU engine; with --device cuda requests run one at a time");
        }

        if (onGpu && precision != AttentionPrecision.Fp32)
        {
            throw new ArgumentException($"{CommonOptions.AttentionFlag(precision)} selects a CPU attention kernel; it cannot be combined with --device cuda");
        }

        var plan = KvCacheFactory.ResolvePlan(onGpu && kvText is null && planPath is null ? "fp16" : kvText, planPath, m.Config.Layers);
        if (!onGpu)
        {
            var transformer = new Transformer(m, threads);
            try
            {
                CommonOptions.NoteIfNeverQuantized(plan, ctx);
                var cpu = CommonOptions.Session(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(ctx), precision), ubatch);
                if (parallel == 1)
                {
                    return new DecodeEngine(null, null, transformer, cpu, cpu);
                }

                var more = new List<InferenceSession>();
                try
                {
                    for (int i = 1; i < parallel; i++)
                    {
                        more.Add(CommonOptions.Session(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(ctx), precision), ubatch));
                    }
                }
                catch
                {
                    cpu.Dispose();
                    more.ForEach(x => x.Dispose());
                    throw;
                }

                var batching = new BatchingEngine(transformer) { PromptTokensPerStep = ubatch ?? 0 };
                var sessions = new[] { cpu }.Concat(more).Select(batching.Session).ToList();
                return new DecodeEngine(null, null, transformer, cpu, sessions[0], more, sessions) { Batching = batching };
            }
            catch
            {
                transformer.Dispose();
                throw;
            }
        }

        var context = DeviceOptions.OpenCuda();
        try
        {
            var decoder = new CudaDecoder(context, m, plan, 1, ctx, prefillChunk: ubatch ?? CudaDecoder.DefaultPrefillChunk);
            Console.Error.WriteLine($"[cuda: {context.DeviceName}; {decoder.BuildNote}; weights {decoder.WeightTypes}, {decoder.WeightBytes:N0} bytes uploaded in {decoder.UploadSeconds:F1} s; KV cache {decoder.Layout}, {decoder.CacheBytes:N0} bytes for {ctx} positions; sampling on the host]");
            return new DecodeEngine(context, decoder, null, null, new CudaDecodeSession(decoder));
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _cpu?.Dispose();
        foreach (var s in _more)
        {
            s.Dispose();
        }

        _transformer?.Dispose();
        _decoder?.Dispose();
        _context?.Dispose();
    }
}
