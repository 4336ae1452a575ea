using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// The shape and exact device byte count of the GPU decode cache for a KV plan: FP16 layers, or packed layers
/// (per-token groups, asymmetric; a group of 0 in the plan means 64 on the GPU) with an FP16 residual window of
/// <see cref="Window"/> tokens that grows to <see cref="Window"/> + <see cref="FlushChunk"/> before its oldest
/// <see cref="FlushChunk"/> tokens are quantized on the device.
/// </summary>
public sealed class GpuKvCacheLayout
{
    /// <summary>Default tokens quantized at once when the window is full (a multiple of 32, as the K4V2 kernel needs).</summary>
    public const int DefaultFlushChunk = 32;

    /// <summary>Residual window of a plan that gives none (the 64).</summary>
    public const int DefaultWindow = 64;

    /// <summary>Packed per-token group of a plan that leaves it open (0).</summary>
    public const int DefaultGroup = 64;

    private GpuKvCacheLayout(IReadOnlyList<GpuKvLayerLayout> layers, int batch, int kvHeads, int headDim, int capacity, int window, int flushChunk, string name)
    {
        FlushChunk = flushChunk;
        Layers = layers;
        Batch = batch;
        KvHeads = kvHeads;
        HeadDim = headDim;
        Capacity = capacity;
        Window = window;
        Name = name;
    }

    /// <summary>Per-layer layouts.</summary>
    public IReadOnlyList<GpuKvLayerLayout> Layers { get; }

    /// <summary>Sequences.</summary>
    public int Batch { get; }

    /// <summary>KV heads.</summary>
    public int KvHeads { get; }

    /// <summary>Head dimension.</summary>
    public int HeadDim { get; }

    /// <summary>Positions per sequence.</summary>
    public int Capacity { get; }

    /// <summary>FP16 residual window of packed layers (tokens kept unquantized at least).</summary>
    public int Window { get; }

    /// <summary>Tokens quantized at once when the window holds <see cref="Window"/> + this many.</summary>
    public int FlushChunk { get; }

    /// <summary>Rows of the residual buffer: window + flush chunk.</summary>
    public int ResidualCapacity => Window + FlushChunk;

    /// <summary>The plan's name.</summary>
    public string Name { get; }

    /// <summary>Whether any layer is packed.</summary>
    public bool AnyPacked => Layers.Any(l => l.IsPacked);

    /// <summary>Exact device bytes of all layers.</summary>
    public long ByteCount => Layers.Sum(l => l.ByteCount((long)Batch * KvHeads, Capacity, HeadDim, ResidualCapacity));

    /// <summary>Builds the layout; throws naming the plan's option (<see cref="KvPlan.Source"/>: <c>--kv 'k4v2:pc'</c>, <c>--kv-plan plan.json</c>) when the plan cannot run on the GPU.</summary>
    /// <param name="plan">The KV plan.</param>
    /// <param name="config">The model.</param>
    /// <param name="batch">Sequences.</param>
    /// <param name="capacity">Positions per sequence.</param>
    /// <param name="window">FP16 window (0: the plan's residual rounded up to the chunk, or <see cref="DefaultWindow"/>).</param>
    /// <param name="flushChunk">Tokens quantized at once; the K4V2 kernel needs a multiple of 32 (1 mirrors the CPU cache, which quantizes token by token).</param>
    public static GpuKvCacheLayout Create(KvPlan plan, ModelConfig config, int batch, int capacity, int window = 0, int flushChunk = DefaultFlushChunk)
    {
        if (flushChunk is < 1 or > 64)
        {
            throw new ArgumentException($"flushChunk: {flushChunk} must be in 1..64");
        }

        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(config);
        if (batch < 1)
        {
            throw new ArgumentException($"--batch must be >= 1, got {batch}");
        }

        if (capacity < 1)
        {
            throw new ArgumentException($"--ctx must be >= 1, got {capacity}");
        }

        if (plan.Layers.Count != config.Layers)
        {
            throw new ArgumentException($"{plan.Source}: the plan has {plan.Layers.Count} layers, the model {config.Layers}");
        }

        var layers = new List<GpuKvLayerLayout>();
        for (int l = 0; l < plan.Layers.Count; l++)
        {
            KvSpec k = plan.Layers[l].K, v = plan.Layers[l].V;
            if (!k.IsQuantized && !v.IsQuantized)
            {
                if (k.Bits == KvBits.Fp32 || v.Bits == KvBits.Fp32)
                {
                    throw new ArgumentException($"{plan.Source}: layer {l} is fp32; the GPU cache holds fp16 or packed codes (use --kv fp16)");
                }

                layers.Add(new GpuKvLayerLayout(null, null));
                continue;
            }

            if (!k.IsQuantized || !v.IsQuantized)
            {
                throw new ArgumentException($"{plan.Source}: layer {l} quantizes only one of K and V; the GPU cache needs both packed or both fp16");
            }

            layers.Add(new GpuKvLayerLayout(Format(k, config.HeadDim, plan.Source, l, "K"), Format(v, config.HeadDim, plan.Source, l, "V"))
            {
                RotateKeys = k.Rotate,
                RotateValues = v.Rotate,
            });
        }

        int planWindow = 0;
        foreach (KvLayerSpec ls in plan.Layers)
        {
            planWindow = Math.Max(planWindow, Math.Max(ls.K.Residual, ls.V.Residual));
        }

        if (window <= 0)
        {
            window = planWindow == 0 ? DefaultWindow : (planWindow + flushChunk - 1) / flushChunk * flushChunk;
        }

        if (flushChunk % 32 != 0)
        {
            layers = layers.Select(l => l with { AllowFastKernel = false }).ToList();
        }

        return new GpuKvCacheLayout(layers, batch, config.KvHeads, config.HeadDim, capacity, window, flushChunk, plan.Name);
    }

    /// <summary>"fp16 x32" or "k4:g64:tok/v2:g64:tok x32, window 64 + 32".</summary>
    public override string ToString()
    {
        var groups = Layers.GroupBy(l => l.ToString()).Select(g => $"{g.Key} x{g.Count()}");
        return string.Join(", ", groups) + (AnyPacked ? $"; FP16 window {Window} + {FlushChunk}" : string.Empty);
    }

    /// <summary>The same layout with every packed layer served by the FP32 packed kernel (to check the K4V2 kernel against it).</summary>
    public GpuKvCacheLayout WithoutFastKernel() =>
        new(Layers.Select(l => l with { AllowFastKernel = false }).ToList(), Batch, KvHeads, HeadDim, Capacity, Window, FlushChunk, Name);

    private static PackedKvFormat Format(KvSpec s, int headDim, string source, int layer, string which)
    {
        if (s.Axis != QuantAxis.PerToken)
        {
            throw new ArgumentException($"{source}: layer {layer} {which} uses per-channel groups; the GPU decode path quantizes per token only");
        }

        if (s.Symmetric)
        {
            throw new ArgumentException($"{source}: layer {layer} {which} is symmetric; the GPU decode path quantizes asymmetrically only");
        }

        if (s.Sinks > 0)
        {
            throw new ArgumentException($"{source}: layer {layer} {which} keeps attention sinks; the GPU decode path has none");
        }

        int group = s.GroupSize == 0 ? (headDim % DefaultGroup == 0 ? DefaultGroup : s.ChannelGroup(headDim)) : s.GroupSize;
        double bits = s.Bits switch
        {
            KvBits.One => 1,
            KvBits.Ternary => 1.58,
            KvBits.Two => 2,
            KvBits.Three => 3,
            KvBits.Four => 4,
            KvBits.Five => 5,
            KvBits.Six => 6,
            _ => 8,
        };
        try
        {
            return new PackedKvFormat(bits, group, PackedKvAxis.PerToken, headDim);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{source}: layer {layer} {which}: {e.Message}", e);
        }
    }
}
