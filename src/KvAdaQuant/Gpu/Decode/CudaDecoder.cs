using System.Globalization;
using KvAdaQuant.Engine;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// The Llama-family decode step on the GPU for a batch of sequences that advance together: embedding, per layer
/// RMSNorm, fused Q/K/V product (+bias), RoPE and the append to the layer's cache (FP16 rows, or the FP16 window of
/// the packed cache, quantized on the device 32 tokens at a time), split-KV attention (FP16 kernel, K4V2 tensor-core
/// kernel or the generic packed kernel) and its combine, output product added to the residual, RMSNorm, fused
/// gate/up product, SwiGLU, down product added to the residual; final norm, classifier, and greedy or
/// temperature/top-k/top-p sampling on the device. Weights are FP16, or Q8_0/Q4_0 codes and scales as in the file.
/// Every launch is prepared once; a step only rewrites integer arguments, so it allocates nothing. Each method that
/// touches the device first makes the context current on the calling thread, so a decoder may be driven from one
/// thread after another (a server's request handlers), though never from two at once.
/// </summary>
public sealed class CudaDecoder : IDisposable
{
    /// <summary>
    /// Positions per sequence that <see cref="Prefill"/> runs through one pass of the layers by default (a packed layer's
    /// attention takes them in segments of at most its window's free rows, 32 after a flush with the default window).
    /// </summary>
    public const int DefaultPrefillChunk = 256;

    /// <summary>Threads of <c>dec_kv_flush</c>'s blocks (its FLUSH_THREADS: a warp quantizes a row).</summary>
    internal const int FlushThreads = 512;

    /// <summary>Rows (positions x sequences) of one prefill pass at most: the chunk is cut to fit the batch.</summary>
    public const int MaxChunkRows = 256;

    private const int MaxFp16Splits = 512;

    // Splits of one prefill chunk's attention at most (each warp runs every row of the chunk over its positions).
    private const int MaxChunkSplits = 512;
    private readonly CudaContext _ctx;
    private readonly ModelConfig _c;
    private readonly List<IDisposable> _owned = [];
    private readonly CudaModule _module;
    private readonly CudaPackedKvAttention _packed;
    private readonly CudaKvCacheBuffers _cache;
    private readonly CudaDeviceBuffer _tokens, _x, _xb, _qkv, _q, _att, _gu, _h, _logits, _partO, _partML, _rng;
    private readonly CudaLaunch _embed, _finalNorm, _argmax, _sample, _spin;
    private readonly List<CudaLaunch> _output;
    private readonly LayerLaunches[] _layers;
    private readonly int _maxSplits;
    private readonly int[] _hostTokens;
    private readonly ChunkLaunches? _chunk;
    private GpuKvWindow _window;

    /// <summary>Uploads <paramref name="model"/>'s weights, compiles the kernels and allocates a cache of <paramref name="capacity"/> positions for <paramref name="batch"/> sequences.</summary>
    /// <param name="context">The device.</param>
    /// <param name="model">The model (any weight type the CPU engine reads).</param>
    /// <param name="plan">fp16 or a packed plan (per-token, asymmetric).</param>
    /// <param name="batch">Sequences decoded together.</param>
    /// <param name="capacity">Positions per sequence.</param>
    /// <param name="keepQuantized">Keep Q8_0/Q4_0 matrices as such (else everything is FP16).</param>
    /// <param name="kernels">Compiled kernels to reuse (compiled here when null).</param>
    /// <param name="layout">The cache layout (default: <see cref="GpuKvCacheLayout.Create"/> of the plan with its defaults).</param>
    /// <param name="prefillChunk">Positions per sequence that <see cref="Prefill"/> runs through the layers at once (cut to
    /// <see cref="MaxChunkRows"/> rows for the batch); 1 runs the prompt position by position through the decode step.</param>
    /// <param name="tensorCoreGemm">Whether a prefill chunk's matrix products run on the tensor cores
    /// (<c>dec_gemm_tc_*</c>) or as FP32 FMAs (<c>dec_gemm_*</c>); null: the tensor cores where the device has them
    /// (compute capability 8.0 or later).</param>
    /// <param name="tensorCoreAttention">Whether a prefill chunk's attention runs on the tensor cores (<c>dec_attn_*_chunk_tc</c>)
    /// or as FP32 FMAs (<c>dec_attn_*_chunk</c>); null: the tensor cores where the device has them and the head dimension is
    /// a multiple of 16 up to 128.</param>
    public CudaDecoder(
        CudaContext context, LlamaModel model, KvPlan plan, int batch, int capacity, bool keepQuantized = true, CudaDecodeKernels? kernels = null, GpuKvCacheLayout? layout = null,
        int prefillChunk = DefaultPrefillChunk, bool? tensorCoreGemm = null, bool? tensorCoreAttention = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(prefillChunk, 1);
        ArgumentNullException.ThrowIfNull(context);
        PrefillTensorCores = ChooseTensorCores(tensorCoreGemm, context.ComputeCapability);
        ArgumentNullException.ThrowIfNull(model);
        PrefillAttentionTensorCores = ChooseAttentionTensorCores(tensorCoreAttention, context.ComputeCapability, model.Config.HeadDim);
        _ctx = context;
        _c = model.Config;
        Batch = batch;
        Capacity = capacity;
        Layout = layout ?? GpuKvCacheLayout.Create(plan, _c, batch, capacity);
        if (Layout.Batch != batch || Layout.Capacity != capacity || Layout.Layers.Count != _c.Layers)
        {
            throw new ArgumentException("layout: its batch, capacity or layer count differs from the decoder's", nameof(layout));
        }

        int hd = _c.HeadDim;
        if (hd % 8 != 0 || hd > 256)
        {
            throw new ArgumentException($"model: head dimension {hd} is not a multiple of 8 up to 256, which the GPU kernels need");
        }

        if (_c.GroupSize > 8)
        {
            throw new ArgumentException($"model: {_c.GroupSize} query heads per KV head; the GPU attention kernels serve at most 8");
        }

        if (capacity > _c.ContextLength)
        {
            throw new ArgumentException($"--ctx {capacity} exceeds the model's context length {_c.ContextLength}");
        }

        kernels ??= new CudaDecodeKernels(context);
        (byte[] decodeCubin, byte[] packedCubin) = kernels.For(hd);
        _module = Own(context.LoadModule(decodeCubin));
        _packed = Own(new CudaPackedKvAttention(context, hd, packedCubin));
        BuildNote = kernels.Note;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        ModelWeights w = model.Weights;
        CudaWeightMatrix embedding = Own(CudaWeightMatrix.Upload(context, [w.TokenEmbedding], keepQuantized));
        CudaWeightMatrix output = ReferenceEquals(w.Output, w.TokenEmbedding) ? embedding : Own(CudaWeightMatrix.Upload(context, [w.Output], keepQuantized));
        CudaDeviceBuffer finalNorm = Own(context.Upload<float>(w.FinalNorm));
        int dim = _c.Dim, qd = _c.QDim, kvd = _c.KvDim, hid = _c.HiddenDim, qkvRows = qd + (2 * kvd);
        var layerWeights = new (CudaWeightMatrix Qkv, CudaWeightMatrix Wo, CudaWeightMatrix W13, CudaWeightMatrix W2, CudaDeviceBuffer AttnNorm, CudaDeviceBuffer FfnNorm, CudaDeviceBuffer? Bias)[_c.Layers];
        for (int l = 0; l < _c.Layers; l++)
        {
            LayerWeights lw = w.Layers[l];
            CudaDeviceBuffer? bias = null;
            if (lw.Bq is not null || lw.Bk is not null || lw.Bv is not null)
            {
                var b = new float[qkvRows];
                lw.Bq?.CopyTo(b, 0);
                lw.Bk?.CopyTo(b, qd);
                lw.Bv?.CopyTo(b, qd + kvd);
                bias = Own(context.Upload<float>(b));
            }

            layerWeights[l] = (
                Own(CudaWeightMatrix.Upload(context, [lw.Wq, lw.Wk, lw.Wv], keepQuantized)),
                Own(CudaWeightMatrix.Upload(context, [lw.Wo], keepQuantized)),
                Own(CudaWeightMatrix.Upload(context, [lw.W1, lw.W3], keepQuantized)),
                Own(CudaWeightMatrix.Upload(context, [lw.W2], keepQuantized)),
                Own(context.Upload<float>(lw.AttentionNorm)),
                Own(context.Upload<float>(lw.FfnNorm)),
                bias);
        }

        WeightBytes = embedding.ByteCount + (ReferenceEquals(output, embedding) ? 0 : output.ByteCount)
            + layerWeights.Sum(x => x.Qkv.ByteCount + x.Wo.ByteCount + x.W13.ByteCount + x.W2.ByteCount);
        WeightTypes = string.Join(
            ", ",
            layerWeights.SelectMany(x => new[] { x.Qkv.Type, x.Wo.Type, x.W13.Type, x.W2.Type }).Append(embedding.Type).Append(output.Type)
                .GroupBy(t => t).Select(g => $"{g.Key} x{g.Count()}"));
        UploadSeconds = watch.Elapsed.TotalSeconds;

        // RoPE angles of every position, from the CPU engine's own table.
        var rope = new RopeTable(_c, w.RopeFrequencyFactors);
        int half = rope.Half;
        var cos = new float[(long)capacity * half];
        var sin = new float[(long)capacity * half];
        for (int p = 0; p < capacity; p++)
        {
            rope.Angles(p, cos.AsSpan(p * half, half), sin.AsSpan(p * half, half));
        }

        CudaDeviceBuffer cosT = Own(context.Upload<float>(cos));
        CudaDeviceBuffer sinT = Own(context.Upload<float>(sin));

        _cache = Own(new CudaKvCacheBuffers(context, Layout));
        int rows = batch * _c.Heads;
        _maxSplits = MaxSplits(Layout, context.MultiprocessorCount);
        if (_maxSplits > CudaPackedKvAttention.MaxSplits)
        {
            throw new ArgumentException($"--ctx {capacity}: more than {CudaPackedKvAttention.MaxSplits} attention splits; the packed cache holds at most {(CudaPackedKvAttention.MaxSplits - 1) * 128} positions");
        }

        long[] sizes = WorkspaceSizes(_c, batch, _maxSplits);
        _tokens = Buffer(sizes[0]);
        _x = Buffer(sizes[1]);
        _xb = Buffer(sizes[2]);
        _qkv = Buffer(sizes[3]);
        _q = Buffer(sizes[4]);
        _att = Buffer(sizes[5]);
        _gu = Buffer(sizes[6]);
        _h = Buffer(sizes[7]);
        _logits = Buffer(sizes[8]);
        _partO = Buffer(sizes[9]);
        _partML = Buffer(sizes[10]);
        _rng = Buffer(sizes[11]);
        CudaDeviceBuffer? kvScratch = RotationScratchBytes(_c, Layout) is > 0 and var scratchBytes ? Buffer(scratchBytes) : null;
        _hostTokens = new int[batch];
        SeedSampler(42);

        CudaKernel K(string name) => _module.Function(name);
        CudaKernel rms = K("dec_rmsnorm");
        var matvec = new Dictionary<(GpuWeightType, int), CudaKernel>();
        foreach ((GpuWeightType t, string n) in new[] { (GpuWeightType.F16, "f16"), (GpuWeightType.Q8_0, "q8"), (GpuWeightType.Q4_0, "q4") })
        {
            for (int nb = 1; nb <= 8; nb++)
            {
                matvec[(t, nb)] = K($"dec_matvec_{n}_{nb}");
            }
        }

        List<CudaLaunch> MatVec(CudaWeightMatrix m, CudaDeviceBuffer x, int ldx, CudaDeviceBuffer y, int ldy, bool accumulate)
        {
            var list = new List<CudaLaunch>();
            for (int b0 = 0; b0 < batch; b0 += 8)
            {
                int nb = Math.Min(8, batch - b0);
                list.Add(Own(matvec[(m.Type, nb)].Prepare(
                    ((m.Rows + 3) / 4, 1, 1), 256, m.Codes, m.Scales, m.LeadingDimension,
                    CudaArgument.FromUInt64(x.Pointer + ((ulong)b0 * (ulong)ldx * 4)), ldx,
                    CudaArgument.FromUInt64(y.Pointer + ((ulong)b0 * (ulong)ldy * 4)), ldy, m.Rows, m.Cols, accumulate ? 1 : 0)));
            }

            return list;
        }

        _embed = Own(K("dec_embed").Prepare((batch, 1, 1), 256, embedding.Codes, embedding.Scales, embedding.LeadingDimension, (int)embedding.Type, _tokens, _x, dim));
        float scaleLog2 = (float)(1.0 / Math.Sqrt(hd) / Math.Log(2.0));
        int ratio = _c.GroupSize;
        // RoPE + cache append and the rotation of rot layers over `rows` rows (a step's batch, or a prefill chunk's rows).
        CudaLaunch Rope(int l, int rows, CudaDeviceBuffer qkv, CudaDeviceBuffer q, CudaDeviceBuffer? scratch)
        {
            GpuKvLayerLayout ll = Layout.Layers[l];
            CudaKvCacheBuffers.Layer cl = _cache.Layers[l];
            return Own(K("dec_rope_append").Prepare(
                (rows, 1, 1), 256, qkv, qkvRows, layerWeights[l].Bias is null ? CudaArgument.FromUInt64(0) : layerWeights[l].Bias!, cosT, sinT, CudaArgument.FromUInt64(0), 0,
                _c.Heads, _c.KvHeads, _c.RopeLayout == RopeLayout.Interleaved ? 1 : 0, q, cl.Keys, cl.Values, CudaArgument.FromUInt64(HeadStride(ll)), 0,
                scratch is null ? CudaArgument.FromUInt64(0) : scratch, ll.RotateKeys ? 1 : 0, ll.RotateValues ? 1 : 0, batch));
        }

        CudaLaunch Rotate(int l, int rows, CudaDeviceBuffer q, CudaDeviceBuffer scratch)
        {
            GpuKvLayerLayout ll = Layout.Layers[l];
            CudaKvCacheBuffers.Layer cl = _cache.Layers[l];
            return Own(K("dec_rotate_qkv").Prepare(
                (_c.Heads + (2 * _c.KvHeads), rows, 1), 32, q, scratch, cl.Keys, cl.Values, CudaArgument.FromUInt64(HeadStride(ll)), 0,
                _c.Heads, _c.KvHeads, ll.RotateKeys ? 1 : 0, ll.RotateValues ? 1 : 0, batch));
        }

        _layers = new LayerLaunches[_c.Layers];
        for (int l = 0; l < _c.Layers; l++)
        {
            var lw = layerWeights[l];
            GpuKvLayerLayout ll = Layout.Layers[l];
            CudaKvCacheBuffers.Layer cl = _cache.Layers[l];
            ulong headStride = (ulong)(ll.IsPacked ? Layout.ResidualCapacity : capacity) * (ulong)hd;
            var layer = new LayerLaunches
            {
                Layout = ll,
                AttnNorm = Own(rms.Prepare((batch, 1, 1), 256, _x, lw.AttnNorm, _xb, dim, _c.NormEps)),
                Qkv = MatVec(lw.Qkv, _xb, dim, _qkv, qkvRows, false),
                Rope = Rope(l, batch, _qkv, _q, kvScratch),
                Wo = MatVec(lw.Wo, _att, qd, _x, dim, true),
                FfnNorm = Own(rms.Prepare((batch, 1, 1), 256, _x, lw.FfnNorm, _xb, dim, _c.NormEps)),
                W13 = MatVec(lw.W13, _xb, dim, _gu, 2 * hid, false),
                SwiGlu = Own(K("dec_swiglu").Prepare((Math.Min(4096, ((batch * hid) + 255) / 256), 1, 1), 256, _gu, _h, hid, batch)),
                W2 = MatVec(lw.W2, _h, hid, _x, dim, true),
                Combine = Own(_packed.Combine.Prepare((rows, 1, 1), 128, _partO, _partML, _att, 1)),
            };
            if (ll.RotateKeys || ll.RotateValues)
            {
                // Rotated rows (rot): the query and the new K/V rows rotated after RoPE, the attention output turned back.
                layer.Rotate = Rotate(l, batch, _q, kvScratch!);
                if (ll.RotateValues)
                {
                    layer.Unrotate = Own(K("dec_unrotate_rows").Prepare((_c.Heads, batch, 1), 32, _att, _c.Heads));
                }
            }

            if (!ll.IsPacked)
            {
                layer.AttnFp16 = Own(K("dec_attn_fp16").Prepare(
                    (1, _c.KvHeads, batch), 128, cl.Keys, cl.Values, CudaArgument.FromUInt64(headStride), _q, _partO, _partML, 1, 32, ratio, scaleLog2));
            }
            else
            {
                PackedKvFormat kf = ll.Keys!, vf = ll.Values!;
                int rcap = Layout.ResidualCapacity;
                layer.Flush = Own(K("dec_kv_flush").Prepare(
                    (_c.KvHeads, batch, 1), FlushThreads, cl.Keys, cl.Values, CudaArgument.FromUInt64(headStride), 0, Layout.FlushChunk,
                    cl.KeyCodes!, cl.KeyParams!, kf.BitsCode, kf.RowBytes, kf.GroupSize,
                    cl.ValueCodes!, cl.ValueParams!, vf.BitsCode, vf.RowBytes, vf.GroupSize,
                    CudaArgument.FromUInt64((ulong)capacity), 0));
                if (ll.UsesFastKernel)
                {
                    layer.AttnFast = Own(_packed.Fast.Prepare(
                        (1, _c.KvHeads, batch), 128, cl.KeyCodes!, cl.KeyParams!, cl.ValueCodes!, cl.ValueParams!, cl.Keys, cl.Values, 0,
                        _q, _partO, _partML, 0, 128, 1, ratio, scaleLog2, CudaArgument.FromUInt64(0), CudaArgument.FromUInt64(0), capacity, rcap));
                }
                else
                {
                    bool k4v2 = kf.BitsCode == 4 && vf.BitsCode == 2;
                    layer.AttnPacked = Own(K(k4v2 ? "dec_attn_packed_k4v2" : "dec_attn_packed").Prepare(
                        (1, _c.KvHeads, batch), 128,
                        cl.KeyCodes!, cl.KeyParams!, kf.BitsCode, kf.RowBytes, kf.GroupSize,
                        cl.ValueCodes!, cl.ValueParams!, vf.BitsCode, vf.RowBytes, vf.GroupSize,
                        cl.Keys, cl.Values, CudaArgument.FromUInt64((ulong)capacity), CudaArgument.FromUInt64(headStride),
                        _q, _partO, _partML, 0, 0, 32, ratio, scaleLog2));
                }
            }

            _layers[l] = layer;
        }

        _finalNorm = Own(rms.Prepare((batch, 1, 1), 256, _x, finalNorm, _xb, dim, _c.NormEps));
        _output = MatVec(output, _xb, dim, _logits, _c.VocabSize, false);
        _argmax = Own(K("dec_argmax").Prepare((batch, 1, 1), 1024, _logits, _c.VocabSize, _tokens));
        _spin = Own(K("dec_spin").Prepare((1, 1, 1), 32, CudaArgument.FromUInt64(40_000_000)));
        _sample = Own(K("dec_sample").Prepare((batch, 1, 1), 1024, _logits, _c.VocabSize, 1f, 0, 1f, _rng, _tokens));

        // Prefill chunks: the decode step's launches over rows p * batch + b of a chunk's own activation buffers, with the
        // matrix products as matrix-matrix products (dec_gemm_*: every weight read once for all rows of the chunk).
        PrefillChunk = ChunkPositions(batch, prefillChunk);
        if (PrefillChunk > 1)
        {
            var gemm = new[] { GpuWeightType.F16, GpuWeightType.Q8_0, GpuWeightType.Q4_0 }.ToDictionary(t => t, t => K(ChunkGemmKernel(t, PrefillTensorCores)));
            CudaKernel reduce = K("dec_gemm_reduce");
            int chunkRows = PrefillChunk * batch, sms = context.MultiprocessorCount;

            int cr = PrefillChunk * batch;
            // Every buffer of ChunkWorkspaceSizes, so that WorkspaceBytes counts exactly what is allocated.
            CudaDeviceBuffer[] cb = ChunkWorkspaceSizes(_c, Layout, prefillChunk, sms).Select(Buffer).ToArray();
            CudaDeviceBuffer cTokens = cb[0], cx = cb[1], cxb = cb[2], cqkv = cb[3], cq = cb[4], catt = cb[5], cgu = cb[6], ch = cb[7], cPartO = cb[9], cPartML = cb[10];
            CudaDeviceBuffer gemmPart = cb[12];
            CudaDeviceBuffer? cScratch = cb.Length > 13 ? cb[13] : null;
            // The column splits are chosen per chunk for its rows (RunGemm); gemmPart holds the most any row count up to the
            // chunk's needs.
            ChunkGemm Gemm(CudaWeightMatrix m, CudaDeviceBuffer x, int ldx, CudaDeviceBuffer y, int ldy, bool accumulate)
            {
                (int splits, int colsPerSplit) = GemmSplits(m.Rows, m.Cols, chunkRows, sms);
                return new ChunkGemm(
                    Own(gemm[m.Type].Prepare(
                        ((m.Rows + 63) / 64, (chunkRows + 31) / 32, splits), 128, m.Codes, m.Scales, m.LeadingDimension, x, ldx, y, ldy, m.Rows, m.Cols, chunkRows,
                        accumulate ? 1 : 0, gemmPart, colsPerSplit)),
                    Own(reduce.Prepare((Math.Min(4096, ((m.Rows * chunkRows) + 255) / 256), 1, 1), 256, gemmPart, splits, y, ldy, m.Rows, chunkRows, accumulate ? 1 : 0)),
                    m.Rows,
                    m.Cols,
                    sms);
            }

            var chunkLayers = new ChunkLayer[_c.Layers];
            for (int l = 0; l < _c.Layers; l++)
            {
                var lw = layerWeights[l];
                GpuKvLayerLayout ll = Layout.Layers[l];
                CudaKvCacheBuffers.Layer cl = _cache.Layers[l];
                ulong headStride = (ulong)(ll.IsPacked ? Layout.ResidualCapacity : capacity) * (ulong)hd;
                CudaLaunch attn;
                if (!ll.IsPacked)
                {
                    attn = Own(K(ChunkAttentionKernel(null, PrefillAttentionTensorCores)).Prepare(
                        (1, _c.KvHeads, batch), 128, cl.Keys, cl.Values, CudaArgument.FromUInt64(headStride), cq, cPartO, cPartML, 1, 32, ratio, scaleLog2, 1, 1));
                }
                else
                {
                    // Every packed layer, the K4V2 tensor-core decode ones too, runs a chunk kernel over the per-token packed rows.
                    PackedKvFormat kf = ll.Keys!, vf = ll.Values!;
                    attn = Own(K(ChunkAttentionKernel(kf.BitsCode == 4 && vf.BitsCode == 2, PrefillAttentionTensorCores)).Prepare(
                        (1, _c.KvHeads, batch), 128,
                        cl.KeyCodes!, cl.KeyParams!, kf.BitsCode, kf.RowBytes, kf.GroupSize,
                        cl.ValueCodes!, cl.ValueParams!, vf.BitsCode, vf.RowBytes, vf.GroupSize,
                        cl.Keys, cl.Values, CudaArgument.FromUInt64((ulong)capacity), CudaArgument.FromUInt64(headStride),
                        cq, cPartO, cPartML, 0, 0, 32, ratio, scaleLog2, 1, 1));
                }

                chunkLayers[l] = new ChunkLayer
                {
                    Layout = ll,
                    AttnNorm = Own(rms.Prepare((cr, 1, 1), 256, cx, lw.AttnNorm, cxb, dim, _c.NormEps)),
                    Qkv = Gemm(lw.Qkv, cxb, dim, cqkv, qkvRows, false),
                    Rope = Rope(l, cr, cqkv, cq, cScratch),
                    Rotate = ll.RotateKeys || ll.RotateValues ? Rotate(l, cr, cq, cScratch!) : null,
                    Unrotate = ll.RotateValues ? Own(K("dec_unrotate_rows").Prepare((_c.Heads, cr, 1), 32, catt, _c.Heads)) : null,
                    Attn = attn,
                    Combine = Own(_packed.Combine.Prepare((cr * _c.Heads, 1, 1), 128, cPartO, cPartML, catt, 1)),
                    Wo = Gemm(lw.Wo, catt, qd, cx, dim, true),
                    FfnNorm = Own(rms.Prepare((cr, 1, 1), 256, cx, lw.FfnNorm, cxb, dim, _c.NormEps)),
                    W13 = Gemm(lw.W13, cxb, dim, cgu, 2 * hid, false),
                    SwiGlu = Own(K("dec_swiglu").Prepare((Math.Min(4096, ((cr * hid) + 255) / 256), 1, 1), 256, cgu, ch, hid, cr)),
                    W2 = Gemm(lw.W2, ch, hid, cx, dim, true),
                };
            }

            _chunk = new ChunkLaunches
            {
                Tokens = cTokens,
                X = cx,
                Qkv = cqkv,
                Q = cq,
                Att = catt,
                Embed = Own(K("dec_embed").Prepare((cr, 1, 1), 256, embedding.Codes, embedding.Scales, embedding.LeadingDimension, (int)embedding.Type, cTokens, cx, dim)),
                Layers = chunkLayers,

                // The last position's rows (one per sequence) through the final norm into the decode step's buffer, so the
                // decode step's classifier launches give the logits.
                FinalNorm = Own(rms.Prepare((batch, 1, 1), 256, cx, finalNorm, _xb, dim, _c.NormEps)),
                GemmInputs = [cxb, catt, ch],
            };
        }

        DeviceBytes = WeightBytes + _cache.ByteCount + _owned.OfType<CudaDeviceBuffer>().Sum(b => b.Length);
    }

    /// <summary>Sequences decoded together.</summary>
    public int Batch { get; }

    /// <summary>
    /// Tests: the last prefill chunk's input of a matrix product of the last layer, <paramref name="rows"/> rows of
    /// <paramref name="width"/> floats: 0 the FFN norm's output (W13's input), 1 the attention output (Wo's), 2 the SwiGLU
    /// output (W2's).
    /// </summary>
    internal float[] ChunkGemmInput(int which, int rows, int width)
    {
        if (_chunk is null)
        {
            throw new InvalidOperationException("this decoder prefills position by position");
        }

        Synchronize();
        var all = new float[_chunk.GemmInputs[which].Length / 4];
        _chunk.GemmInputs[which].CopyTo<float>(all);
        return all[..(rows * width)];
    }

    /// <summary>Positions per sequence.</summary>
    public int Capacity { get; }

    /// <summary>Logits per sequence and step (the model's vocabulary).</summary>
    public int VocabSize => _c.VocabSize;

    /// <summary>Positions processed so far (the same for every sequence).</summary>
    public int Position { get; private set; }

    /// <summary>The cache layout.</summary>
    public GpuKvCacheLayout Layout { get; }

    /// <summary>Device bytes of the weights as uploaded.</summary>
    public long WeightBytes { get; }

    /// <summary>Device bytes of the cache.</summary>
    public long CacheBytes => _cache.ByteCount;

    /// <summary>Device bytes this decoder allocated (weights, cache, activations, attention partials, RoPE tables).</summary>
    public long DeviceBytes { get; }

    /// <summary>GPU weight types and how many matrices have each.</summary>
    public string WeightTypes { get; }

    /// <summary>Seconds spent packing and uploading the weights.</summary>
    public double UploadSeconds { get; }

    /// <summary>How the kernels were built.</summary>
    public string BuildNote { get; }

    /// <summary>Packed positions (per sequence) and FP16 window rows now held by packed layers.</summary>
    public (int Quantized, int Residual) PackedState => (_window.Quantized, _window.Residual);

    /// <summary>
    /// Device bytes besides the weights and the cache for <paramref name="layout"/>: activations, logits, attention
    /// partials (sized for the most splits the split policy can ask for), sampler states and the RoPE tables, and the
    /// prefill chunk's activations and partials (<paramref name="prefillChunk"/> as the constructor's).
    /// </summary>
    public static long WorkspaceBytes(ModelConfig config, GpuKvCacheLayout layout, int multiprocessors, int prefillChunk = DefaultPrefillChunk)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(layout);
        long rope = 2L * Math.Max(4, (long)layout.Capacity * (config.HeadDim / 2) * 4);
        return WorkspaceSizes(config, layout.Batch, MaxSplits(layout, multiprocessors)).Sum() + rope + RotationScratchBytes(config, layout)
            + ChunkWorkspaceSizes(config, layout, prefillChunk, multiprocessors).Sum();
    }

    // The prefill chunk's buffers (WorkspaceSizes for its rows, without logits; the matrix products' split partials; then the
    // rotation scratch where a layer is rotated); none when the chunk is one position.
    private static long[] ChunkWorkspaceSizes(ModelConfig c, GpuKvCacheLayout layout, int prefillChunk, int sms)
    {
        int positions = ChunkPositions(layout.Batch, prefillChunk);
        if (positions < 2)
        {
            return [];
        }

        int rows = positions * layout.Batch;
        long[] sizes = WorkspaceSizes(c, rows, ChunkPartialSplits((long)layout.Batch * layout.KvHeads, c.GroupSize, c.HeadDim, sms, layout.Capacity, positions), logits: false);
        long part = 4;
        foreach ((int r, int k) in new[] { (c.QDim + (2 * c.KvDim), c.Dim), (c.Dim, c.QDim), (2 * c.HiddenDim, c.Dim), (c.Dim, c.HiddenDim) })
        {
            part = Math.Max(part, 4L * GemmPartialRows(r, k, rows, sms));
        }

        long scratch = RotationScratchBytes(c, layout) / layout.Batch * rows;
        return scratch > 0 ? [.. sizes, part, scratch] : [.. sizes, part];
    }

    // The FP32 K and V rows of one step that dec_rotate_qkv rotates into the cache, where a layer is rotated (rot); else 0.
    private static long RotationScratchBytes(ModelConfig c, GpuKvCacheLayout layout) =>
        layout.Layers.Any(l => l.RotateKeys || l.RotateValues) ? 4L * layout.Batch * 2 * c.KvDim : 0;

    /// <summary>The most attention partials per (sequence, query head) the split policy uses for any length up to the capacity.</summary>
    public static int MaxSplits(GpuKvCacheLayout layout, int multiprocessors)
    {
        ArgumentNullException.ThrowIfNull(layout);
        long perHead = (long)layout.Batch * layout.KvHeads;
        int most = 0;
        if (layout.Layers.Any(l => !l.UsesFastKernel))
        {
            // FP16 layers and packed layers served by dec_attn_packed split the positions the same way.
            int splits = Fp16Splits(perHead, multiprocessors);
            most = Math.Min(4 * ((Math.Min(splits, (layout.Capacity + 31) / 32) + 3) / 4), 4 * ((MaxFp16Splits + 3) / 4));
        }

        if (layout.Layers.Any(l => l.UsesFastKernel))
        {
            for (int t = 0; t <= layout.Capacity; t += layout.FlushChunk)
            {
                int tps = FastTokensPerSplit(perHead, t, multiprocessors);
                most = Math.Max(most, ((t + tps - 1) / tps) + 1);
            }
        }

        return Math.Max(most, 1);
    }

    /// <summary>The embedded CUDA C source of the decode kernels.</summary>
    public static string KernelSource()
    {
        using Stream stream = typeof(CudaDecoder).Assembly.GetManifestResourceStream("KvAdaQuant.Gpu.Decode.cu")
            ?? throw new InvalidOperationException("The decode kernel source resource is missing from the assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Forgets every position (the cache contents are overwritten as it refills).</summary>
    public void Reset()
    {
        Position = 0;
        _window = default;
    }

    /// <summary>
    /// Whether keeping only the first <paramref name="length"/> positions (<see cref="Truncate"/>) leaves exactly the state
    /// a run of those positions alone would have built. FP16 layers: always (a position's K/V rows are written at that
    /// position when it is decoded, and attention reads only the positions before the current length, so the rows after
    /// the cut are never read and are overwritten as the cache refills). Packed layers: when the packed rows are the ones
    /// <paramref name="length"/> positions would have (<see cref="GpuKvWindow.At"/> gives the same count quantized now),
    /// i.e. every position at or after the cut is still in the FP16 window, whose rows after the cut are likewise
    /// never read (attention and the flush read the first <c>Residual</c> rows); a packed row cannot become its FP16 row
    /// again, so a cut behind a flush is refused. The same for every sequence of the batch.
    /// </summary>
    public bool CanTruncate(int length) =>
        length >= 0 && length <= Position
        && (!Layout.AnyPacked || GpuKvWindow.At(length, Layout.Window, Layout.FlushChunk).Quantized == _window.Quantized);

    /// <summary>Keeps the first <paramref name="length"/> positions; a <see cref="KvCacheException"/> when <see cref="CanTruncate"/> is false.</summary>
    public void Truncate(int length)
    {
        if (length < 0 || length > Position)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"cannot keep {length} of the GPU cache's {Position} positions");
        }

        if (!CanTruncate(length))
        {
            throw new KvCacheException($"the GPU KV cache {Layout.Name} cannot be cut back to {length} of its {Position} positions exactly: {_window.Quantized} positions are already quantized");
        }

        Position = length;
        if (Layout.AnyPacked)
        {
            _window = GpuKvWindow.At(length, Layout.Window, Layout.FlushChunk);
        }
    }

    /// <summary>
    /// Positions per sequence that <see cref="Prefill"/> runs through the layers at once: the constructor's
    /// <c>prefillChunk</c> cut to <see cref="MaxChunkRows"/> / <see cref="Batch"/>; 1 when prefill runs position by position.
    /// </summary>
    public int PrefillChunk { get; }

    /// <summary>
    /// Whether a prefill chunk's matrix products run on the tensor cores (<c>dec_gemm_tc_*</c>: FP16 weight codes, each x
    /// value split into two FP16 halves after a power-of-two scaling, FP32 accumulation) rather than as FP32 FMAs.
    /// </summary>
    public bool PrefillTensorCores { get; }

    /// <summary>
    /// Whether a prefill chunk's attention runs on the tensor cores (<c>dec_attn_*_chunk_tc</c>: flash-attention style, q, p
    /// and a packed cache's dequantized K / V each as two FP16 halves, FP32 sums) rather than as FP32 FMAs.
    /// </summary>
    public bool PrefillAttentionTensorCores { get; }

    /// <summary>
    /// Runs <paramref name="tokens"/> (position-major: <see cref="Batch"/> tokens per position, sequence b's at index
    /// p x Batch + b) for every sequence, <see cref="PrefillChunk"/> positions per pass through the layers: each weight
    /// matrix is read once per 8 rows of the chunk instead of once per row, and the attention of a chunk's rows reads its
    /// positions' K/V once from memory (causal: a row sees the positions up to its own). Each row computes what the
    /// decode step computes for it (the same kernels for every norm and RoPE; matrix products and attention summed in
    /// another order, by chunk kernels). A packed layer appends and attends a chunk's positions in segments of at most the
    /// window's free rows, its window flushed between them (<see cref="WindowSegments"/>), so each position sees the packed
    /// and window rows the decode step would have shown it, and the packed rows are those of the decode step. The logits of the last position stay on the device (<see cref="CopyLogits"/>, <see cref="Sample"/>).
    /// </summary>
    public void Prefill(ReadOnlySpan<int> tokens) => Prefill(tokens, null);

    /// <summary>
    /// <see cref="Prefill(ReadOnlySpan{int})"/> that also hands <paramref name="onLogits"/> the logits after every position
    /// (a prompt's log-probabilities): the index of the position in <paramref name="tokens"/> and the host copy of its
    /// logits, <see cref="Batch"/> x vocabulary (sequence b's at b x vocabulary; valid during the call). The layers still run
    /// in chunks; after each chunk every position's rows go through the final norm and the classifier (the decode step's
    /// matrix-vector kernel, the same one that gives the last position's logits) and are copied back. A null handler is
    /// <see cref="Prefill(ReadOnlySpan{int})"/>.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> tokens, PositionLogitsHandler? onLogits)
    {
        _ctx.MakeCurrent();
        if (tokens.Length % Batch != 0)
        {
            throw new ArgumentException($"tokens: {tokens.Length} is not a whole number of positions for a batch of {Batch}", nameof(tokens));
        }

        foreach (int t in tokens)
        {
            if ((uint)t >= (uint)_c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {t} is outside the vocabulary of {_c.VocabSize}");
            }
        }

        int positions = tokens.Length / Batch;
        if ((long)Position + positions > Capacity)
        {
            throw new KvCacheException($"context full: {positions} positions after {Position} do not fit in the GPU cache of {Capacity}");
        }

        float[]? host = onLogits is null ? null : new float[Batch * _c.VocabSize];
        for (int done = 0; done < positions;)
        {
            FlushIfFull();
            int n = Math.Min(PrefillChunk, positions - done);
            ReadOnlySpan<int> part = tokens.Slice(done * Batch, n * Batch);
            if (n == 1)
            {
                _tokens.CopyFrom(part);
                Forward();
                if (onLogits is not null)
                {
                    CopyLogits(host);
                    onLogits(done, host);
                }
            }
            else
            {
                _chunk!.Tokens.CopyFrom(part);
                ForwardChunk(n, logits: onLogits is null && done + n == positions);
                if (onLogits is not null)
                {
                    for (int i = 0; i < n; i++)
                    {
                        ChunkLogits(i);
                        CopyLogits(host);
                        onLogits(done + i, host);
                    }
                }
            }

            done += n;
        }
    }

    // The logits of position i of the chunk just run (its rows through the final norm into the step's buffer, then the
    // decode step's classifier).
    private void ChunkLogits(int i)
    {
        ChunkLaunches c = _chunk!;
        c.FinalNorm.SetArgument(0, CudaArgument.FromUInt64(c.X.Pointer + ((ulong)i * (ulong)Batch * (ulong)_c.Dim * 4)));
        c.FinalNorm.Launch();
        Run(_output);
    }

    /// <summary>Seeds the per-sequence xorshift64* states of the device sampler (sequence b gets seed + b, never 0).</summary>
    public void SeedSampler(ulong seed)
    {
        _ctx.MakeCurrent();
        var states = new ulong[Batch];
        for (int b = 0; b < Batch; b++)
        {
            ulong s = seed + (ulong)b;
            states[b] = s == 0 ? 0x9E3779B97F4A7C15UL : s;
        }

        _rng.CopyFrom<ulong>(states);
    }

    /// <summary>Runs one position for every sequence with <paramref name="tokens"/> (one per sequence); logits stay on the device.</summary>
    public void Step(ReadOnlySpan<int> tokens)
    {
        _ctx.MakeCurrent();
        if (tokens.Length != Batch)
        {
            throw new ArgumentException($"tokens: {tokens.Length} given for a batch of {Batch}", nameof(tokens));
        }

        foreach (int t in tokens)
        {
            if ((uint)t >= (uint)_c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token {t} is outside the vocabulary of {_c.VocabSize}");
            }
        }

        _tokens.CopyFrom(tokens);
        Forward();
    }

    /// <summary>Runs one position with the tokens the last <see cref="SampleGreedy"/> / <see cref="Sample"/> left on the device.</summary>
    public void StepSampled()
    {
        _ctx.MakeCurrent();
        Forward();
    }

    /// <summary>Greedy pick per sequence (the first index on ties), on the device; copies the tokens to <paramref name="tokens"/>.</summary>
    public void SampleGreedy(Span<int> tokens)
    {
        _ctx.MakeCurrent();
        _argmax.Launch();
        _tokens.CopyTo(tokens[..Batch]);
    }

    /// <summary>Temperature / top-k / top-p sampling on the device (greedy at temperature 0).</summary>
    public void Sample(float temperature, int topK, float topP, Span<int> tokens)
    {
        _ctx.MakeCurrent();
        // (A temperature so small that 1 / T overflows is greedy: (max - max) x infinity would be NaN on the device.)
        if (temperature == 0f || float.IsInfinity(1f / temperature))
        {
            SampleGreedy(tokens);
            return;
        }

        _sample.SetArgument(2, 1f / temperature);
        _sample.SetArgument(3, topK);
        _sample.SetArgument(4, topP);
        _sample.Launch();
        _tokens.CopyTo(tokens[..Batch]);
    }

    /// <summary>
    /// Benchmarks: one decode step plus the device argmax, timed twice: on the host, the time to queue its launches
    /// (wall time of the calls), and on the device with CUDA events while the work runs back to back (queued behind a
    /// spin kernel, so the GPU never waits for the host). Advances the position by one.
    /// </summary>
    public (double QueueMilliseconds, double GpuMilliseconds) TimeStep()
    {
        _ctx.MakeCurrent();
        using var timer = new CudaEventTimer(_ctx);
        _ctx.Synchronize();
        _spin.Launch();
        timer.Start();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        Forward();
        _argmax.Launch();
        double queue = watch.Elapsed.TotalMilliseconds;
        timer.Stop();
        double gpu = timer.ElapsedMilliseconds();
        return (queue, gpu);
    }

    /// <summary>Copies the logits of the last step ([batch][vocab]) to <paramref name="logits"/>.</summary>
    public void CopyLogits(Span<float> logits)
    {
        _ctx.MakeCurrent();
        _logits.CopyTo(logits[..(Batch * _c.VocabSize)]);
    }

    /// <summary>Waits for the device.</summary>
    public void Synchronize()
    {
        _ctx.MakeCurrent();
        _ctx.Synchronize();
    }

    /// <summary>
    /// Benchmarks: fills every cache buffer with random values (FP16 in [-1, 1), packed codes hashed, valid pairs) and
    /// sets the position to <paramref name="positions"/>, as if that many tokens had been decoded.
    /// </summary>
    public void FillRandom(int positions, uint seed)
    {
        _ctx.MakeCurrent();
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(positions, Capacity);
        uint s = seed;
        foreach (CudaKvCacheBuffers.Layer l in _cache.Layers)
        {
            Fill(_packed.FillHalves, l.Keys, l.Keys.Length / 2, s++);
            Fill(_packed.FillHalves, l.Values, l.Values.Length / 2, s++);
            if (l.KeyCodes is not null)
            {
                Fill(_packed.FillBytes, l.KeyCodes, l.KeyCodes.Length / 4, s++);
                Fill(_packed.FillParams, l.KeyParams!, l.KeyParams!.Length / 4, s++);
                Fill(_packed.FillBytes, l.ValueCodes!, l.ValueCodes!.Length / 4, s++);
                Fill(_packed.FillParams, l.ValueParams!, l.ValueParams!.Length / 4, s++);
            }
        }

        _ctx.Synchronize();
        Position = positions;
        _window = GpuKvWindow.At(positions, Layout.Window, Layout.FlushChunk);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_owned.Count > 0)
        {
            _ctx.MakeCurrent();
        }

        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }

        _owned.Clear();
    }

    private void Forward()
    {
        if (Position >= Capacity)
        {
            throw new KvCacheException($"context full: {Position} positions fill the GPU cache of {Capacity}");
        }

        bool packed = Layout.AnyPacked;
        FlushIfFull();
        int pos = Position;
        int length = pos + 1;
        ConfigureAttention(length);
        _embed.Launch();
        foreach (LayerLaunches l in _layers)
        {
            l.AttnNorm.Launch();
            Run(l.Qkv);
            l.Rope.SetArgument(6, pos);
            l.Rope.SetArgument(14, l.Layout.IsPacked ? _window.Residual : pos);
            l.Rope.Launch();
            if (l.Rotate is not null)
            {
                l.Rotate.SetArgument(5, l.Layout.IsPacked ? _window.Residual : pos);
                l.Rotate.Launch();
            }

            if (l.AttnFp16 is not null)
            {
                l.AttnFp16.Launch();
            }
            else if (l.AttnFast is not null)
            {
                l.AttnFast.Launch();
            }
            else
            {
                l.AttnPacked!.Launch();
            }

            l.Combine.Launch();
            l.Unrotate?.Launch();
            Run(l.Wo);
            l.FfnNorm.Launch();
            Run(l.W13);
            l.SwiGlu.Launch();
            Run(l.W2);
        }

        _finalNorm.Launch();
        Run(_output);
        Position++;
        if (packed)
        {
            _window.Append();
        }
    }

    // Elements between two heads' FP16 rows of a layer: the whole capacity, or the window's rows for a packed layer.
    private ulong HeadStride(GpuKvLayerLayout ll) => (ulong)(ll.IsPacked ? Layout.ResidualCapacity : Capacity) * (ulong)_c.HeadDim;

    // Quantizes the oldest chunk of a full FP16 window (packed layers) before the next append.
    private void FlushIfFull()
    {
        if (!Layout.AnyPacked || !_window.NeedsFlush(Layout.Window, Layout.FlushChunk))
        {
            return;
        }

        foreach (LayerLaunches l in _layers)
        {
            if (l.Flush is not null)
            {
                LaunchFlush(l.Flush, _window.Residual, _window.Quantized);
            }
        }

        _window.Flush(Layout.FlushChunk);
    }

    // One chunk of n positions through the layers (the window already flushed if it was full); see Prefill. The matrix
    // products take all n positions at once; a packed layer's RoPE, cache append and attention run in the chunk's window
    // segments (WindowSegments), its window flushed between them as position by position would. The classifier runs only
    // for the prompt's last chunk (logits: its last position's), since Prefill leaves only those on the device.
    private void ForwardChunk(int n, bool logits)
    {
        ChunkLaunches c = _chunk!;
        int rows = n * Batch, pos = Position;
        GpuKvWindow end = _window;
        List<WindowSegment> segments = Layout.AnyPacked ? WindowSegments(_window, n, Layout.Window, Layout.FlushChunk, out end) : [];
        c.Embed.SetGrid((rows, 1, 1));
        c.Embed.Launch();
        for (int li = 0; li < c.Layers.Length; li++)
        {
            ChunkLayer l = c.Layers[li];
            l.AttnNorm.SetGrid((rows, 1, 1));
            l.AttnNorm.Launch();
            RunGemm(l.Qkv, rows);
            if (l.Layout.IsPacked)
            {
                foreach (WindowSegment seg in segments)
                {
                    if (seg.FlushBefore)
                    {
                        // The state before the flush: a full window, the flush chunk not yet packed.
                        LaunchFlush(_layers[li].Flush!, seg.Window.Residual + Layout.FlushChunk, seg.Window.Quantized - Layout.FlushChunk);
                    }

                    AttendChunkRows(l, seg.First, seg.Count, pos, seg.Window.Residual, seg.Window.Quantized, seg.Window.Residual + seg.Count);
                }
            }
            else
            {
                AttendChunkRows(l, 0, n, pos, pos, 0, 0);
            }

            if (l.Unrotate is not null)
            {
                l.Unrotate.SetGrid((_c.Heads, rows, 1));
                l.Unrotate.Launch();
            }

            RunGemm(l.Wo, rows);
            l.FfnNorm.SetGrid((rows, 1, 1));
            l.FfnNorm.Launch();
            RunGemm(l.W13, rows);
            l.SwiGlu.SetArgument(3, rows);
            l.SwiGlu.Launch();
            RunGemm(l.W2, rows);
        }

        if (logits)
        {
            ChunkLogits(n - 1);
        }

        Position += n;
        _window = end;
    }

    // RoPE, the cache append and the attention (splits merged into the attention output rows) of chunk positions
    // [first, first + count) of one layer: cache slot `slot` onwards; a packed layer's attention over `quantized` packed
    // and `residual` window rows (the new ones included), an FP16 layer's over every position up to the last new one.
    private void AttendChunkRows(ChunkLayer l, int first, int count, int pos, int slot, int quantized, int residual)
    {
        ChunkLaunches c = _chunk!;
        int rows = count * Batch;
        ulong row0 = (ulong)first * (ulong)Batch;
        var q = CudaArgument.FromUInt64(c.Q.Pointer + (row0 * (ulong)_c.QDim * 4));
        l.Rope.SetGrid((rows, 1, 1));
        l.Rope.SetArgument(0, CudaArgument.FromUInt64(c.Qkv.Pointer + (row0 * (ulong)(_c.QDim + (2 * _c.KvDim)) * 4)));
        l.Rope.SetArgument(6, pos + first);
        l.Rope.SetArgument(10, q);
        l.Rope.SetArgument(14, slot);
        l.Rope.Launch();
        if (l.Rotate is not null)
        {
            l.Rotate.SetGrid((_c.Heads + (2 * _c.KvHeads), rows, 1));
            l.Rotate.SetArgument(0, q);
            l.Rotate.SetArgument(5, slot);
            l.Rotate.Launch();
        }

        int rowGroups = ChunkRowGroups(count, _c.GroupSize, _c.HeadDim);
        int length = l.Layout.IsPacked ? quantized + residual : pos + first + count;
        (int tps, int splits) = ChunkSplits((long)Batch * _c.KvHeads, rowGroups, _ctx.MultiprocessorCount, length);
        l.Attn.SetGrid((splits * rowGroups, _c.KvHeads, Batch));
        if (l.Layout.IsPacked)
        {
            l.Attn.SetArgument(14, q);
            l.Attn.SetArgument(17, quantized);
            l.Attn.SetArgument(18, residual);
            l.Attn.SetArgument(19, tps);
            l.Attn.SetArgument(22, count);
            l.Attn.SetArgument(23, rowGroups);
        }
        else
        {
            l.Attn.SetArgument(3, q);
            l.Attn.SetArgument(6, length);
            l.Attn.SetArgument(7, tps);
            l.Attn.SetArgument(10, count);
            l.Attn.SetArgument(11, rowGroups);
        }

        l.Attn.Launch();
        l.Combine.SetGrid((rows * _c.Heads, 1, 1));
        l.Combine.SetArgument(2, CudaArgument.FromUInt64(c.Att.Pointer + (row0 * (ulong)_c.QDim * 4)));
        l.Combine.SetArgument(3, splits);
        l.Combine.Launch();
    }

    /// <summary>One part of a prefill chunk over a packed cache: chunk positions [<see cref="First"/>, First + <see cref="Count"/>),
    /// appended to the window at <see cref="Window"/>, after a flush of the full window where <see cref="FlushBefore"/>.</summary>
    internal readonly record struct WindowSegment(int First, int Count, bool FlushBefore, GpuKvWindow Window);

    /// <summary>
    /// The segments a prefill chunk of <paramref name="n"/> positions attends in over a packed cache whose window is
    /// <paramref name="start"/>: each takes at most the window's free rows, and a full window is flushed before the next, as
    /// position by position; so each position sees the packed and window rows it would have seen. <paramref name="end"/>: the
    /// window after the chunk.
    /// </summary>
    internal static List<WindowSegment> WindowSegments(GpuKvWindow start, int n, int window, int flush, out GpuKvWindow end)
    {
        var segments = new List<WindowSegment>();
        GpuKvWindow w = start;
        for (int first = 0; first < n;)
        {
            bool flushBefore = w.NeedsFlush(window, flush);
            if (flushBefore)
            {
                w.Flush(flush);
            }

            int count = Math.Min(n - first, window + flush - w.Residual);
            segments.Add(new WindowSegment(first, count, flushBefore, w));
            w.Append(count);
            first += count;
        }

        end = w;
        return segments;
    }

    // Quantizes the oldest flush chunk of one layer's full window of `residual` rows after `quantized` packed rows.
    private static void LaunchFlush(CudaLaunch flush, int residual, int quantized)
    {
        flush.SetArgument(3, residual);
        flush.SetArgument(16, quantized);
        flush.Launch();
    }

    // Sets the split counts of every layer's attention for a sequence length of `length` (the new token included).
    private void ConfigureAttention(int length)
    {
        int sms = _ctx.MultiprocessorCount;
        long perHead = (long)Batch * _c.KvHeads;

        (int tpw, int gx) = WarpSplits(perHead, sms, length);
        int fp16Total = 4 * gx;

        // Packed: T quantized positions, R + 1 window rows (the new token is appended before attention).
        int t = _window.Quantized, r = _window.Residual + 1;
        (int fastTps, int fastSplits) = FastSplits(perHead, t, sms);
        foreach (LayerLaunches l in _layers)
        {
            if (l.AttnFp16 is not null)
            {
                l.AttnFp16.SetGrid((gx, _c.KvHeads, Batch));
                l.AttnFp16.SetArgument(6, length);
                l.AttnFp16.SetArgument(7, tpw);
                l.Combine.SetArgument(3, fp16Total);
            }
            else if (l.AttnFast is not null)
            {
                int total = fastSplits + 1;
                l.AttnFast.SetGrid((total, _c.KvHeads, Batch));
                l.AttnFast.SetArgument(6, r);
                l.AttnFast.SetArgument(10, t);
                l.AttnFast.SetArgument(11, fastTps);
                l.AttnFast.SetArgument(12, total);
                l.Combine.SetArgument(3, total);
            }
            else
            {
                l.AttnPacked!.SetGrid((gx, _c.KvHeads, Batch));
                l.AttnPacked.SetArgument(17, t);
                l.AttnPacked.SetArgument(18, r);
                l.AttnPacked.SetArgument(19, tpw);
                l.Combine.SetArgument(3, fp16Total);
            }
        }
    }

    /// <summary>
    /// Split of <paramref name="length"/> positions for dec_attn_fp16 / dec_attn_packed: about 64 warps per
    /// multiprocessor, each at least 32 positions (a multiple of 8); blocks of 4 warps.
    /// </summary>
    internal static (int PositionsPerWarp, int Blocks) WarpSplits(long perHead, int sms, int length)
    {
        int splits = Fp16Splits(perHead, sms);
        int tpw = Math.Max(32, (((length + splits - 1) / splits) + 7) / 8 * 8);
        splits = (length + tpw - 1) / tpw;
        return (tpw, (splits + 3) / 4);
    }

    /// <summary>Split of <paramref name="quantized"/> packed positions for the K4V2 kernel (its window adds one more split).</summary>
    internal static (int TokensPerSplit, int Splits) FastSplits(long perHead, int quantized, int sms)
    {
        int tps = FastTokensPerSplit(perHead, quantized, sms);
        return (tps, (quantized + tps - 1) / tps);
    }

    /// <summary>
    /// Split of a prefill chunk's attention over <paramref name="length"/> positions (the chunk included): about four
    /// blocks per multiprocessor over the (sequence, KV head, row group) blocks of a split, each split a multiple of 32
    /// positions, at most <see cref="MaxChunkSplits"/> splits.
    /// </summary>
    internal static (int PositionsPerSplit, int Splits) ChunkSplits(long perHead, int rowGroups, int sms, int length)
    {
        long perSplit = perHead * rowGroups;
        int splits = RequestedChunkSplits(perSplit, sms);
        int tps = Math.Max(32, (((length + splits - 1) / splits) + 31) / 32 * 32);
        return (tps, (length + tps - 1) / tps);
    }

    /// <summary>Threads of the chunk attention per query row: 1, 2 or 4 for head dims up to 64, 128 and 256 (the kernel's CH_TPR).</summary>
    internal static int ChunkThreadsPerRow(int headDim) => headDim <= 64 ? 1 : headDim <= 128 ? 2 : 4;

    /// <summary>
    /// The most splits <see cref="ChunkSplits"/> gives for any length up to <paramref name="capacity"/> over
    /// <paramref name="perHead"/> blocks a split (one row group; <see cref="ChunkPartialSplits"/> passes the KV heads x the row
    /// groups of each chunk size to size the partials).
    /// </summary>
    internal static int ChunkMaxSplits(long perHead, int sms, int capacity) =>
        Math.Min(RequestedChunkSplits(perHead, sms), Math.Max(1, (capacity + 31) / 32));

    // Splits a chunk's attention asks for over `perSplit` blocks of a split: about four blocks a multiprocessor, at most
    // MaxChunkSplits.
    private static int RequestedChunkSplits(long perSplit, int sms) => (int)Math.Clamp(((4L * sms) + perSplit - 1) / perSplit, 1, MaxChunkSplits);

    /// <summary>
    /// Blocks of the chunk attention per (split, KV head, sequence): its <paramref name="positions"/> x
    /// <paramref name="ratio"/> query rows, 128 threads a block and 1, 2 or 4 threads a row (head dim up to 64, 128, 256),
    /// as the kernel's CH_TPR.
    /// </summary>
    internal static int ChunkRowGroups(int positions, int ratio, int headDim)
    {
        int rowsPerBlock = 128 / ChunkThreadsPerRow(headDim);
        return ((positions * ratio) + rowsPerBlock - 1) / rowsPerBlock;
    }

    /// <summary>Positions per sequence of one prefill pass: <paramref name="prefillChunk"/> cut to <see cref="MaxChunkRows"/> rows for <paramref name="batch"/> sequences, at least 1.</summary>
    internal static int ChunkPositions(int batch, int prefillChunk) => Math.Max(1, Math.Min(prefillChunk, MaxChunkRows / Math.Max(1, batch)));

    private static int Fp16Splits(long perHead, int sms) => (int)Math.Clamp(((sms * 64L) + perHead - 1) / perHead, 1, MaxFp16Splits);

    // The K4V2 kernel's positions per split: the largest of 2048..256 that still gives 1.9 blocks per multiprocessor, else 128.
    private static int FastTokensPerSplit(long perHead, int t, int sms)
    {
        foreach (int tps in new[] { 2048, 1024, 512, 256 })
        {
            if (perHead * ((t + tps - 1) / tps) * 10 >= 19L * sms)
            {
                return tps;
            }
        }

        return 128;
    }

    // Tokens, activations, logits (none for a prefill chunk's rows), attention partials and sampler states for `batch` rows.
    private static long[] WorkspaceSizes(ModelConfig c, int batch, int maxSplits, bool logits = true)
    {
        long rows = (long)batch * c.Heads;
        long logitRows = logits ? batch : 0;
        long[] sizes =
        [
            4L * batch, 4L * batch * c.Dim, 4L * batch * Math.Max(c.Dim, c.QDim), 4L * batch * (c.QDim + (2 * c.KvDim)), 4L * batch * c.QDim,
            4L * batch * c.QDim, 4L * batch * 2 * c.HiddenDim, 4L * batch * c.HiddenDim, 4L * logitRows * c.VocabSize,
            4L * rows * maxSplits * c.HeadDim, 4L * rows * maxSplits * 2, 8L * batch,
        ];
        return sizes.Select(x => Math.Max(4, x)).ToArray();
    }

    private static void Run(List<CudaLaunch> launches)
    {
        foreach (CudaLaunch launch in launches)
        {
            launch.Launch();
        }
    }

    // A chunk's matrix product over its first `rows` rows, its columns split for that many rows (then the sum of the splits).
    private static void RunGemm(ChunkGemm g, int rows)
    {
        (int splits, int colsPerSplit) = GemmSplits(g.Rows, g.Cols, rows, g.Multiprocessors);
        g.Gemm.SetGrid(((g.Rows + 63) / 64, (rows + 31) / 32, splits));
        g.Gemm.SetArgument(9, rows);
        g.Gemm.SetArgument(12, colsPerSplit);
        g.Gemm.Launch();
        if (splits > 1)
        {
            g.Reduce.SetArgument(1, splits);
            g.Reduce.SetArgument(5, rows);
            g.Reduce.Launch();
        }
    }

    /// <summary>
    /// Partials per output element a chunk's matrix product of <paramref name="rows"/> x <paramref name="cols"/> weights needs
    /// at most, over every row count up to <paramref name="chunkRows"/> (splits x rows x weight rows where it splits, else 0).
    /// </summary>
    internal static long GemmPartialRows(int rows, int cols, int chunkRows, int sms)
    {
        long most = 0;
        for (int n = 1; n <= chunkRows; n++)
        {
            (int splits, _) = GemmSplits(rows, cols, n, sms);
            most = Math.Max(most, splits > 1 ? (long)splits * n * rows : 0);
        }

        return most;
    }

    /// <summary>
    /// Attention partials (splits) per query row to allocate for chunks of up to <paramref name="positions"/> positions, so that
    /// rows x splits covers what <see cref="ChunkSplits"/> gives any chunk of n &lt;= positions positions at any length up to
    /// <paramref name="capacity"/>: the larger a chunk, the more row groups and the fewer splits, so the most is far below
    /// positions x <see cref="ChunkMaxSplits"/>.
    /// </summary>
    internal static int ChunkPartialSplits(long perHead, int ratio, int headDim, int sms, int capacity, int positions)
    {
        long most = 1;
        for (int n = 1; n <= positions; n++)
        {
            // ChunkMaxSplits of the chunk's (KV head, row group) blocks: the most its splits come to at any length.
            most = Math.Max(most, (long)n * ChunkMaxSplits(perHead * ChunkRowGroups(n, ratio, headDim), sms, capacity));
        }

        return (int)((most + positions - 1) / positions);
    }

    /// <summary>Whether a device of <paramref name="capability"/> runs <c>dec_gemm_tc_*</c> (mma.sync m16n8k16: 8.0 or later).</summary>
    internal static bool TensorCoresAvailable((int Major, int Minor) capability) => capability.Major >= 8;

    /// <summary>
    /// Whether the prefill's matrix products run on the tensor cores: <paramref name="requested"/>, or where null whether
    /// the device has them; asking for them on a device without them is an error naming the option and the device.
    /// </summary>
    internal static bool ChooseTensorCores(bool? requested, (int Major, int Minor) capability)
    {
        if (requested == true && !TensorCoresAvailable(capability))
        {
            throw new ArgumentException(
                $"tensorCoreGemm: the prefill's tensor-core matrix products (--prefill-gemm tensor-cores) need compute capability 8.0 or later; this device (sm_{capability.Major}{capability.Minor}) has {capability.Major}.{capability.Minor}",
                "tensorCoreGemm");
        }

        return requested ?? TensorCoresAvailable(capability);
    }

    /// <summary>Whether the tensor-core chunk attention serves <paramref name="headDim"/> (a multiple of 16 up to 128: its m16n8k16 steps and registers).</summary>
    internal static bool AttentionTensorCoresFit(int headDim) => headDim % 16 == 0 && headDim <= 128;

    /// <summary>
    /// Whether the prefill's chunk attention runs on the tensor cores: <paramref name="requested"/>, or where null whether the
    /// device has them and <paramref name="headDim"/> fits; asking for them where either is missing is an error naming the
    /// option, the device or the head dimension.
    /// </summary>
    internal static bool ChooseAttentionTensorCores(bool? requested, (int Major, int Minor) capability, int headDim)
    {
        if (requested == true && !TensorCoresAvailable(capability))
        {
            throw new ArgumentException(
                $"tensorCoreAttention: the prefill's tensor-core attention (--prefill-attention tensor-cores) needs compute capability 8.0 or later; this device (sm_{capability.Major}{capability.Minor}) has {capability.Major}.{capability.Minor}",
                "tensorCoreAttention");
        }

        if (requested == true && !AttentionTensorCoresFit(headDim))
        {
            throw new ArgumentException(
                $"tensorCoreAttention: the prefill's tensor-core attention (--prefill-attention tensor-cores) serves head dimensions that are a multiple of 16 up to 128; this model's is {headDim}",
                "tensorCoreAttention");
        }

        return requested ?? (TensorCoresAvailable(capability) && AttentionTensorCoresFit(headDim));
    }

    /// <summary>
    /// The kernel for a prefill chunk's attention: over the FP16 cache (<paramref name="k4v2"/> null), a packed layer's
    /// (false) or one with 4-bit keys and 2-bit values (true, widths fixed at compile time).
    /// </summary>
    internal static string ChunkAttentionKernel(bool? k4v2, bool tensorCores) =>
        (k4v2 switch { null => "dec_attn_fp16_chunk", true => "dec_attn_packed_k4v2_chunk", false => "dec_attn_packed_chunk" }) + (tensorCores ? "_tc" : "");

    /// <summary>The kernel for a prefill chunk's matrix product of <paramref name="type"/> weights.</summary>
    internal static string ChunkGemmKernel(GpuWeightType type, bool tensorCores) =>
        (tensorCores ? "dec_gemm_tc_" : "dec_gemm_") + type switch
        {
            GpuWeightType.F16 => "f16",
            GpuWeightType.Q8_0 => "q8",
            GpuWeightType.Q4_0 => "q4",
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "no prefill matrix product for this weight type"),
        };

    /// <summary>
    /// Column splits of a prefill chunk's matrix product (<c>dec_gemm_*</c>) of <paramref name="rows"/> x
    /// <paramref name="cols"/> weights over <paramref name="chunkRows"/> rows: enough for about six blocks per
    /// multiprocessor, each split at least 128 columns, the columns per split a multiple of 32.
    /// </summary>
    internal static (int Splits, int ColsPerSplit) GemmSplits(int rows, int cols, int chunkRows, int sms)
    {
        long blocks = (long)((rows + 63) / 64) * ((chunkRows + 31) / 32);
        int want = (int)Math.Min(int.MaxValue, ((6L * sms) + blocks - 1) / blocks);
        int splits = Math.Clamp(want, 1, Math.Max(1, cols / 128));
        int colsPerSplit = (((cols + splits - 1) / splits) + 31) / 32 * 32;
        return ((cols + colsPerSplit - 1) / colsPerSplit, colsPerSplit);
    }

    private void Fill(CudaKernel kernel, CudaDeviceBuffer buffer, long count, uint seed)
    {
        using CudaLaunch launch = kernel.Prepare((1024, 1, 1), 256, buffer, CudaArgument.FromUInt64((ulong)Math.Max(1, count)), (int)seed);
        launch.Launch();
    }

    private CudaDeviceBuffer Buffer(long bytes) => Own(_ctx.Allocate(Math.Max(4, bytes)));

    private T Own<T>(T item)
        where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    // A prefill chunk's buffers and launches (rows p * batch + b of its own activations).
    private sealed class ChunkLaunches
    {
        public required CudaDeviceBuffer Tokens { get; init; }

        public required CudaDeviceBuffer X { get; init; }

        /// <summary>The QKV product's output, the roped queries and the attention output (rows p * batch + b).</summary>
        public required CudaDeviceBuffer Qkv { get; init; }

        public required CudaDeviceBuffer Q { get; init; }

        public required CudaDeviceBuffer Att { get; init; }

        public required CudaLaunch Embed { get; init; }

        public required ChunkLayer[] Layers { get; init; }

        public required CudaLaunch FinalNorm { get; init; }

        /// <summary>The matrix products' inputs: the norm output (QKV and W13), the attention output (Wo), the SwiGLU output (W2).</summary>
        public required CudaDeviceBuffer[] GemmInputs { get; init; }
    }

    private sealed class ChunkLayer
    {
        public required GpuKvLayerLayout Layout { get; init; }

        public required CudaLaunch AttnNorm { get; init; }

        public required ChunkGemm Qkv { get; init; }

        public required CudaLaunch Rope { get; init; }

        public CudaLaunch? Rotate { get; init; }

        public CudaLaunch? Unrotate { get; init; }

        public required CudaLaunch Attn { get; init; }

        public required CudaLaunch Combine { get; init; }

        public required ChunkGemm Wo { get; init; }

        public required CudaLaunch FfnNorm { get; init; }

        public required ChunkGemm W13 { get; init; }

        public required CudaLaunch SwiGlu { get; init; }

        public required ChunkGemm W2 { get; init; }
    }

    // A chunk's matrix product: dec_gemm_* over (row tiles, x tiles, splits), and dec_gemm_reduce where it splits the columns.
    private sealed record ChunkGemm(CudaLaunch Gemm, CudaLaunch Reduce, int Rows, int Cols, int Multiprocessors);

    private sealed class LayerLaunches
    {
        public required GpuKvLayerLayout Layout { get; init; }

        public required CudaLaunch AttnNorm { get; init; }

        public required List<CudaLaunch> Qkv { get; init; }

        public required CudaLaunch Rope { get; init; }

        /// <summary>Rotates the query and the new K/V rows of a layer with rotated rows (rot); null otherwise.</summary>
        public CudaLaunch? Rotate { get; set; }

        /// <summary>Turns the attention output back where the values are rotated; null otherwise.</summary>
        public CudaLaunch? Unrotate { get; set; }

        public CudaLaunch? AttnFp16 { get; set; }

        public CudaLaunch? AttnFast { get; set; }

        public CudaLaunch? AttnPacked { get; set; }

        public CudaLaunch? Flush { get; set; }

        public required CudaLaunch Combine { get; init; }

        public required List<CudaLaunch> Wo { get; init; }

        public required CudaLaunch FfnNorm { get; init; }

        public required List<CudaLaunch> W13 { get; init; }

        public required CudaLaunch SwiGlu { get; init; }

        public required List<CudaLaunch> W2 { get; init; }
    }
}
