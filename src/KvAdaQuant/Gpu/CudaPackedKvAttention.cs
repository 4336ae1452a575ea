using System.Globalization;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu;

/// <summary>
/// Decode attention on the packed quantized KV cache with CUDA: the kernels of PackedKvAttention.cu,
/// compiled at run time with NVRTC for the device at hand (or loaded from a cubin built by nvcc), launched
/// through the driver API.
/// </summary>
public sealed class CudaPackedKvAttention : IDisposable
{
    private readonly CudaContext _context;
    private readonly CudaModule _module;

    /// <summary>Compiles (or loads <paramref name="cubin"/>) and finds the kernels.</summary>
    /// <exception cref="CudaException">NVRTC is missing or compilation failed.</exception>
    public CudaPackedKvAttention(CudaContext context, int headDim, byte[]? cubin = null, IReadOnlyList<string>? defines = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        HeadDim = headDim;
        if (cubin is null)
        {
            if (!NvrtcCompiler.TryLoad(out NvrtcCompiler? nvrtc, out string reason))
            {
                throw new CudaException(reason);
            }

            var watch = System.Diagnostics.Stopwatch.StartNew();
            cubin = nvrtc!.CompileToCubin(KernelSource(), "PackedKvAttention.cu", context.Arch, [$"HEAD_DIM={headDim}", .. defines ?? []]);
            BuildNote = string.Create(CultureInfo.InvariantCulture, $"NVRTC {nvrtc.Version} ({nvrtc.LibraryPath}), {context.Arch}, {watch.ElapsedMilliseconds} ms");
        }
        else
        {
            BuildNote = "cubin given by the caller";
        }

        _module = context.LoadModule(cubin);
        Fast = _module.Function("kvq_k4v2_fast");
        Generic = _module.Function("kvq_generic_packed");
        Residual = _module.Function("kvq_generic_fp16");
        Combine = _module.Function("kvq_combine");
        FillBytes = _module.Function("kvq_fill_bytes");
        FillParams = _module.Function("kvq_fill_params");
        FillHalves = _module.Function("kvq_fill_halves");
        FastBlocksPerMultiprocessor = ResidentBlocks(Fast.Registers, Fast.SharedBytes);
    }

    /// <summary>Most partials the combine kernel merges (its shared weight array).</summary>
    public const int MaxSplits = 2048;

    /// <summary>
    /// Most split weights (query heads per KV head x partials) the fast kernel's fused merge keeps in shared memory
    /// (its pipeline stages, 2 x 4 x 3,584 bytes at least); beyond that a pass uses the separate combine kernel.
    /// </summary>
    public const int FusedMergeWeights = 7168;

    /// <summary>Head dimension compiled in.</summary>
    public int HeadDim { get; }

    /// <summary>How the module was built.</summary>
    public string BuildNote { get; }

    /// <summary>K4V2 tensor-core split kernel.</summary>
    public CudaKernel Fast { get; }

    /// <summary>Generic FP32 split kernel (any width, axis, group).</summary>
    public CudaKernel Generic { get; }

    /// <summary>FP16 residual-window kernel.</summary>
    public CudaKernel Residual { get; }

    /// <summary>Split-combine kernel.</summary>
    public CudaKernel Combine { get; }

    /// <summary>Benchmark fill: hashed bytes.</summary>
    public CudaKernel FillBytes { get; }

    /// <summary>Benchmark fill: valid (scale, min) pairs.</summary>
    public CudaKernel FillParams { get; }

    /// <summary>Benchmark fill: FP16 values in [-1, 1).</summary>
    public CudaKernel FillHalves { get; }

    /// <summary>The CUDA C source embedded in this assembly.</summary>
    public static string KernelSource()
    {
        using Stream stream = typeof(CudaPackedKvAttention).Assembly.GetManifestResourceStream("KvAdaQuant.Gpu.PackedKvAttention.cu")
            ?? throw new InvalidOperationException("The kernel source resource is missing from the assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Copies a host batch to the device.</summary>
    public PackedKvDeviceCache Upload(PackedKvBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        CheckHeadDim(batch.HeadDim);
        return new PackedKvDeviceCache(
            batch.Keys.Format, batch.Values.Format, batch.Batch, batch.KvHeads, batch.QueryHeads, batch.QuantizedTokens, batch.ResidualTokens,
            _context.Upload<byte>(batch.Keys.Codes), _context.Upload<uint>(batch.Keys.Params),
            _context.Upload<byte>(batch.Values.Codes), _context.Upload<uint>(batch.Values.Params),
            _context.Upload<ushort>(batch.ResidualKeys), _context.Upload<ushort>(batch.ResidualValues));
    }

    /// <summary>Allocates a device cache of any format filled on the device with hashed codes and valid pairs (benchmarks).</summary>
    public PackedKvDeviceCache AllocateRandom(
        PackedKvFormat keyFormat, PackedKvFormat valueFormat, int batch, int kvHeads, int queryHeads, int quantizedTokens, int residualTokens, uint seed)
    {
        ArgumentNullException.ThrowIfNull(keyFormat);
        ArgumentNullException.ThrowIfNull(valueFormat);
        CheckHeadDim(keyFormat.HeadDim);
        long heads = (long)batch * kvHeads;
        CudaDeviceBuffer Bytes(long count, uint s)
        {
            CudaDeviceBuffer b = _context.Allocate(RoundUp4(count));
            FillWith(FillBytes, b, b.Length / 4, s);
            return b;
        }

        CudaDeviceBuffer Pairs(long count, uint s)
        {
            CudaDeviceBuffer b = _context.Allocate(Math.Max(4, count * 4));
            FillWith(FillParams, b, Math.Max(1, count), s);
            return b;
        }

        CudaDeviceBuffer Halves(long count, uint s)
        {
            CudaDeviceBuffer b = _context.Allocate(Math.Max(4, RoundUp4(count * 2)));
            FillWith(FillHalves, b, Math.Max(1, count), s);
            return b;
        }

        var cache = new PackedKvDeviceCache(
            keyFormat, valueFormat, batch, kvHeads, queryHeads, quantizedTokens, residualTokens,
            Bytes(heads * quantizedTokens * keyFormat.RowBytes, seed), Pairs(heads * keyFormat.ParamCount(quantizedTokens), seed + 1),
            Bytes(heads * quantizedTokens * valueFormat.RowBytes, seed + 2), Pairs(heads * valueFormat.ParamCount(quantizedTokens), seed + 3),
            Halves(heads * residualTokens * keyFormat.HeadDim, seed + 4), Halves(heads * residualTokens * keyFormat.HeadDim, seed + 5));
        _context.Synchronize();
        return cache;
    }

    /// <summary>
    /// Blocks of the fast kernel (4 warps) resident on one multiprocessor: registers are allocated per warp in units
    /// of 256 out of 64K, and each block takes its static shared memory plus 1 KB of the 228 KB (Hopper's limits).
    /// </summary>
    public int FastBlocksPerMultiprocessor { get; }

    /// <summary>
    /// Default packed tokens per split for the fast kernel (a model fitted to the H200 sweeps in the README): the
    /// kernel runs its packed-token blocks first, spread evenly over the multiprocessors, and a multiprocessor's time
    /// follows the tokens it is given, so among the splits from 1,024 to 6,144 tokens (multiples of 128) whose blocks
    /// all fit in one wave of resident blocks (<see cref="FastBlocksPerMultiprocessor"/> per multiprocessor) it takes
    /// the one that gives the busiest multiprocessor the fewest tokens, counting each block's start and merge as
    /// <see cref="BlockOverheadTokens"/> more (ties: the longest). When none fits one wave, the one of 4,096, 3,072 and
    /// 2,048 whose last wave is fullest.
    /// </summary>
    public int DefaultTokensPerSplit(PackedKvDeviceCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        int sms = _context.MultiprocessorCount;
        return DefaultTokensPerSplit(cache.Batch * cache.KvHeads, cache.QuantizedTokens, sms, sms * FastBlocksPerMultiprocessor);
    }

    /// <summary>A block's start and merge in the split policy, in packed tokens of work.</summary>
    internal const int BlockOverheadTokens = 256;

    /// <summary>The split policy of <see cref="DefaultTokensPerSplit(PackedKvDeviceCache)"/> for <paramref name="heads"/> (batch x KV heads) of <paramref name="tokens"/> packed tokens.</summary>
    internal static int DefaultTokensPerSplit(long heads, int tokens, int multiprocessors, long slots)
    {
        long Blocks(int tps) => heads * ((Math.Max(1L, tokens) + tps - 1) / tps);
        int best = 0;
        long bestCost = long.MaxValue;
        int longest = Math.Min(RoundUpTo(Math.Max(tokens, 1024), 128), 6144);
        for (int tps = longest; tps >= 1024; tps -= 128)
        {
            long blocks = Blocks(tps);
            if (blocks > slots)
            {
                continue;
            }

            long cost = ((blocks + multiprocessors - 1) / multiprocessors) * (tps + BlockOverheadTokens);
            if (cost < bestCost)
            {
                best = tps;
                bestCost = cost;
            }
        }

        if (best > 0)
        {
            return best;
        }

        best = 4096;
        double bestIdle = double.MaxValue;
        foreach (int tps in new[] { 4096, 3072, 2048 })
        {
            double waves = (double)Blocks(tps) / slots;
            double idle = Math.Ceiling(waves) - waves;
            if (idle < bestIdle - 1e-9)
            {
                best = tps;
                bestIdle = idle;
            }
        }

        return best;
    }

    /// <summary>
    /// Blocks per (batch, KV head) the fast kernel splits an FP16 residual window of <paramref name="residualTokens"/>
    /// rows over, after <paramref name="splits"/> packed-token blocks per head (from the H200 sweeps in the README):
    /// as many as fit in the resident block slots the packed-token blocks leave free, 1 to 4 (shorter window blocks
    /// finish alongside the long ones); 4 when not even one per head fits (they then run after the long blocks, and
    /// short ones end sooner). At least 8 rows a block.
    /// </summary>
    public static int FastResidualBlocks(long heads, int splits, int residualTokens, long slots)
    {
        long free = slots - (heads * splits);
        int blocks = free >= heads ? (int)Math.Clamp(free / heads, 1, 4) : 4;
        return Math.Max(1, Math.Min(blocks, residualTokens / 8));
    }

    /// <summary>Resident 128-thread blocks per multiprocessor for a kernel's registers per thread and static shared bytes.</summary>
    internal static int ResidentBlocks(int registers, int sharedBytes)
    {
        int perWarp = RoundUpTo(Math.Max(1, registers) * 32, 256);
        int byRegisters = 65536 / perWarp / 4;
        int byShared = (228 * 1024) / (sharedBytes + 1024);
        return Math.Max(1, Math.Min(Math.Min(byRegisters, byShared), 16));
    }

    /// <summary>
    /// Prepares a pass: <paramref name="queries"/> is [batch][queryHeads][D] FP32, <paramref name="output"/> likewise.
    /// The fast kernel is used when <paramref name="preferFast"/> and the cache's format allows it.
    /// </summary>
    /// <remarks>
    /// With <paramref name="fuseCombine"/> the fast kernel's last block per (batch, KV head) merges the splits itself
    /// (a per-head arrival counter in device memory, all heads of the KV head at once), so a pass is one launch;
    /// otherwise, for the generic kernel, and when the split weights exceed <see cref="FusedMergeWeights"/>, a separate
    /// combine kernel runs. With <paramref name="dependentCombine"/> (the default) that combine kernel is queued as a
    /// programmatic dependent launch after the fast kernel (it starts while the split kernel drains and waits for its
    /// results on the device; an ordinary launch where the driver lacks cuLaunchKernelEx).
    /// </remarks>
    public PackedKvAttentionPass Prepare(
        PackedKvDeviceCache cache, CudaDeviceBuffer queries, CudaDeviceBuffer output, bool preferFast, int tokensPerSplit = 0, bool fuseCombine = false,
        bool dependentCombine = true, int residualBlocks = 0)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(output);
        if (cache.QuantizedTokens + cache.ResidualTokens == 0)
        {
            throw new ArgumentException("cache: no positions to attend to.", nameof(cache));
        }

        int ratio = cache.QueryHeads / cache.KvHeads;
        if (ratio > 8 || ratio * cache.KvHeads != cache.QueryHeads)
        {
            throw new ArgumentException($"cache: {cache.QueryHeads} query heads over {cache.KvHeads} KV heads is not a GQA ratio of 1..8.", nameof(cache));
        }

        long qBytes = 4L * cache.Batch * cache.QueryHeads * cache.HeadDim;
        if (queries.Length < qBytes || output.Length < qBytes)
        {
            throw new ArgumentException($"queries: need {qBytes} bytes for queries and output.", nameof(queries));
        }

        bool fast = preferFast && cache.FastPathApplies;
        int tps = tokensPerSplit > 0 ? tokensPerSplit : fast ? DefaultTokensPerSplit(cache) : 256;
        if (fast && tps % 128 != 0)
        {
            throw new ArgumentException($"tokensPerSplit: {tps} must be a multiple of 128 for the fast kernel.", nameof(tokensPerSplit));
        }

        if (!fast && cache.KeyFormat.Axis == PackedKvAxis.PerChannel && tps % cache.KeyFormat.GroupSize != 0)
        {
            tps = RoundUpTo(tps, cache.KeyFormat.GroupSize);
        }

        int splits = cache.QuantizedTokens == 0 ? 0 : (cache.QuantizedTokens + tps - 1) / tps;
        int windowBlocks = !fast || cache.ResidualTokens == 0 ? (cache.ResidualTokens > 0 ? 1 : 0)
            : residualBlocks > 0 ? Math.Min(residualBlocks, cache.ResidualTokens)
            : FastResidualBlocks((long)cache.Batch * cache.KvHeads, splits, cache.ResidualTokens, (long)_context.MultiprocessorCount * FastBlocksPerMultiprocessor);
        int total = splits + windowBlocks;
        if (total > MaxSplits)
        {
            throw new ArgumentException($"tokensPerSplit: {tps} gives {total} splits, more than the combine kernel's {MaxSplits}.", nameof(tokensPerSplit));
        }
        long rows = (long)cache.Batch * cache.QueryHeads;
        CudaDeviceBuffer partO = _context.Allocate(rows * total * cache.HeadDim * 4);
        CudaDeviceBuffer partML = _context.Allocate(rows * total * 2 * 4);
        float scaleLog2 = (float)(1.0 / Math.Sqrt(cache.HeadDim) / Math.Log(2.0));
        var launches = new List<CudaLaunch>();
        bool fused = fast && fuseCombine && ratio * total <= FusedMergeWeights;
        CudaDeviceBuffer counters = _context.Allocate(4L * cache.Batch * cache.KvHeads);
        counters.Fill(0u);
        (int, int, int) grid = (splits, cache.KvHeads, cache.Batch);
        if (fast)
        {
            // The residual window is split over the fast kernel's last windowBlocks blocks.
            launches.Add(Fast.Prepare(
                (total, cache.KvHeads, cache.Batch), 128, cache.KeyCodes, cache.KeyParams, cache.ValueCodes, cache.ValueParams,
                cache.ResidualKeys, cache.ResidualValues, cache.ResidualTokens,
                queries, partO, partML, cache.QuantizedTokens, tps, total, ratio, scaleLog2,
                fused ? output : CudaArgument.FromUInt64(0), fused ? counters : CudaArgument.FromUInt64(0),
                cache.QuantizedTokens, cache.ResidualTokens));
        }
        else if (splits > 0)
        {
            PackedKvFormat k = cache.KeyFormat, v = cache.ValueFormat;
            launches.Add(Generic.Prepare(
                grid, 128,
                cache.KeyCodes, cache.KeyParams, k.BitsCode, k.RowBytes, k.GroupSize, k.Axis == PackedKvAxis.PerChannel ? 1 : 0,
                cache.ValueCodes, cache.ValueParams, v.BitsCode, v.RowBytes, v.GroupSize, v.Axis == PackedKvAxis.PerChannel ? 1 : 0,
                queries, partO, partML, cache.QuantizedTokens, tps, total, ratio, scaleLog2, cache.QuantizedTokens));
        }

        if (cache.ResidualTokens > 0 && !fast)
        {
            launches.Add(Residual.Prepare(
                (1, cache.KvHeads, cache.Batch), 128, cache.ResidualKeys, cache.ResidualValues, cache.ResidualTokens,
                queries, partO, partML, total, splits, ratio, scaleLog2, cache.ResidualTokens));
        }

        if (!fused)
        {
            launches.Add(dependentCombine && fast
                ? Combine.PrepareDependent(((int)rows, 1, 1), 128, partO, partML, output, total)
                : Combine.Prepare(((int)rows, 1, 1), 128, partO, partML, output, total));
        }

        return new PackedKvAttentionPass(launches, [partO, partML, counters], splits, tps, fast);
    }

    /// <inheritdoc/>
    public void Dispose() => _module.Dispose();

    private static long RoundUp4(long bytes) => Math.Max(4, (bytes + 3) / 4 * 4);

    private static int RoundUpTo(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

    private void CheckHeadDim(int headDim)
    {
        if (headDim != HeadDim)
        {
            throw new ArgumentException($"headDim: the module was compiled for {HeadDim}, the cache has {headDim}.", nameof(headDim));
        }
    }

    private void FillWith(CudaKernel kernel, CudaDeviceBuffer buffer, long count, uint seed)
    {
        using CudaLaunch launch = kernel.Prepare((1024, 1, 1), 256, buffer, CudaArgument.FromUInt64((ulong)count), (int)seed);
        launch.Launch();
    }
}
