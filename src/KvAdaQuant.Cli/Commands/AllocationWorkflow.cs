using System.Globalization;
using System.Text.Json;
using KvAdaQuant.Allocation;
using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Cli.Commands;

/// <summary>
/// What <c>kvaq allocate</c> and <c>kvaq demo</c> share: parsing a budget, getting per-layer norms (a stats file, or a
/// fresh analysis of calibration tokens), measuring sensitivity, running a policy and turning its allocation into a plan
/// that records the policy's inputs and the achieved average.
/// </summary>
internal sealed class AllocationWorkflow
{
    public static readonly IReadOnlyList<string> Policies = ["uniform", "fixed", "key-favoring", "norm-aware", "group-aware", "sensitivity"];

    public AllocationWorkflow(int layers, int kvHeads, int headDim, int ctx, SpecBitCost real, bool nominal, BitRange range)
    {
        Layers = layers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        Context = ctx;
        Real = real;
        Cost = nominal ? new NominalBitCost() : real;
        Range = range;
    }

    public int Layers { get; }

    public int KvHeads { get; }

    public int HeadDim { get; }

    public int Context { get; }

    public SpecBitCost Real { get; }

    public IBitCost Cost { get; }

    public BitRange Range { get; }

    /// <summary>A number of bits per element, or a uniform pair such as <c>k3v3</c> meaning that plan's cost under the accounting in force.</summary>
    public double ParseBudget(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double b))
        {
            if (!(b > 0 && b <= 32))
            {
                throw new ArgumentException($"--budget {text}: must be a positive number of bits per element (at most 32)");
            }

            return b;
        }

        if (ParsePair(text, "--budget") is { } pair)
        {
            return BitAllocation.Uniform(Layers, pair.K, pair.V).AverageBits(Cost);
        }

        throw new ArgumentException($"--budget '{text}': expected bits per element (e.g. 3 or 4.5) or a uniform pair such as k3v3 (its cost)");
    }

    /// <summary>
    /// A pair such as <c>k4v2</c> given to <paramref name="option"/>: null when the text is not of that shape, an error
    /// naming the option when a width is not one the cache stores.
    /// </summary>
    public static (double K, double V)? ParsePair(string text, string option)
    {
        var m = System.Text.RegularExpressions.Regex.Match(text.Trim().ToLowerInvariant(), @"^k([0-9.]+)v([0-9.]+)$");
        if (!m.Success
            || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double k)
            || !double.TryParse(m.Groups[2].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
        {
            return null;
        }

        foreach (var (w, raw) in new[] { (k, m.Groups[1].Value), (v, m.Groups[2].Value) })
        {
            if (KvAdaQuant.Quantization.KvBitsInfo.TryParse(BitAllocation.Format(w)) is null)
            {
                throw new ArgumentException($"{option} '{text}': width {raw} is not one of {KvAdaQuant.Quantization.KvBitsInfo.Accepted}");
            }
        }

        return (k, v);
    }

    /// <summary>
    /// Refuses, before any work, a budget that <paramref name="policy"/> would refuse at allocation time because even the
    /// lowest width of <see cref="Range"/> everywhere costs more (the cost depends only on the layers, head dimension,
    /// context and base specs), with the policy's own message. The group-aware policy's cost depends on the groups it
    /// derives from the norms, and the fixed policy has no budget: neither is checked here.
    /// </summary>
    public void CheckBudget(string policy, double budget)
    {
        switch (policy)
        {
            case "uniform" or "key-favoring":
                UniformAllocator.CheckBudget(Layers, budget, Range, Cost);
                break;
            case "norm-aware":
                NormAwareAllocator.CheckBudget(Layers, budget, Range, Cost);
                break;
            case "sensitivity":
                SensitivityAllocator.CheckBudget(Layers, Range, budget, Cost);
                break;
        }
    }

    /// <summary>Per-layer norms from <paramref name="stats"/>, or from analysing <paramref name="calibTokens"/> when null.</summary>
    public static LayerNorms Norms(string? stats, NormScore score, NormSource source, Transformer? transformer, Func<IReadOnlyList<int>>? calibTokens, string calibName)
    {
        if (stats is not null)
        {
            return LayerNormsReader.Read(stats, score, source);
        }

        if (transformer is null || calibTokens is null)
        {
            throw new ArgumentException("--stats is required when no model is given");
        }

        var analysis = Analyze(transformer, calibTokens(), calibName);
        return analysis.Norms(score, source);
    }

    /// <summary>Runs the analysis (spectra and norms only) over calibration tokens.</summary>
    public static KvAnalysis Analyze(Transformer transformer, IReadOnlyList<int> tokens, string name) =>
        new KvAnalyzer(transformer).Run(tokens, name, [], null);

    /// <summary>Measures single-tensor sensitivity on calibration tokens.</summary>
    public SensitivityProfile Sensitivity(Transformer transformer, IReadOnlyList<int> calibTokens, int ctx, string calibName, Action<double, double>? progress = null)
    {
        int chunk = Math.Min(ctx, calibTokens.Count);
        var reference = KlReference.Compute(transformer, calibTokens, chunk, l => new FullPrecisionKvCache(l, half: false), transformer.Config.BosToken, scoreFrom: 1);
        return SensitivityProfiler.Measure(reference, Range, a => CacheFor(a), $"{calibName}, {reference.Positions} positions", (d, n) => progress?.Invoke(d, n));
    }

    /// <summary>A cache factory for an allocation over the base specs.</summary>
    public Func<KvLayout, IKvCache> CacheFor(BitAllocation a)
    {
        var plan = AllocationPlan.ToKvPlan(a, Real, "profile");
        return l => KvCacheFactory.Create(plan, l);
    }

    /// <summary>Runs a policy. <paramref name="norms"/> and <paramref name="profile"/> are computed on demand by the callbacks.</summary>
    public BitAllocation Allocate(string policy, double budget, string? fixedPair, Func<LayerNorms> norms, Func<SensitivityProfile> profile, int groupBudget, IReadOnlyList<int> groupSizes)
    {
        switch (policy)
        {
            case "uniform":
                return UniformAllocator.Allocate(Layers, budget, Range, Cost);
            case "fixed":
                {
                    var (k, v) = ParsePair(fixedPair ?? string.Empty, "--fixed")
                        ?? throw new ArgumentException($"--fixed '{fixedPair}': the fixed policy needs a pair such as k4v2");
                    return BitAllocation.Uniform(Layers, k, v);
                }

            case "key-favoring":
                return KeyFavoringAllocator.Allocate(Layers, budget, Range, Cost);
            case "norm-aware":
                return NormAwareAllocator.Allocate(CheckLayers(norms()), budget, Range, Cost);
            case "group-aware":
                {
                    CheckGroupSizes(groupSizes);
                    return GroupAwareAllocator.Allocate(CheckLayers(norms()), groupBudget, groupSizes, budget, Range, Cost);
                }

            case "sensitivity":
                return SensitivityAllocator.Allocate(profile(), budget, Cost);
            default:
                throw new ArgumentException($"--policy '{policy}': unknown policy (expected one of {string.Join(", ", Policies)})");
        }
    }

    /// <summary>The plan JSON (the cache's schema) with a description recording the policy's inputs and the achieved average.</summary>
    public string PlanJson(BitAllocation a, string name, string description)
    {
        var plan = AllocationPlan.ToKvPlan(a, Real, name);
        plan.Validate(Layers, HeadDim);
        var node = System.Text.Json.Nodes.JsonNode.Parse(plan.ToJson())!.AsObject();
        var ordered = new System.Text.Json.Nodes.JsonObject
        {
            ["name"] = name,
            ["description"] = description,
            ["layers"] = node["layers"]!.DeepClone(),
        };
        return ordered.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Average real bits per element of an allocation (scales, zero points, residual and sinks included, at <see cref="Context"/> tokens).</summary>
    public double RealAverage(BitAllocation a) => AllocationPlan.ToKvPlan(a, Real, "x").AverageBits(KvHeads, HeadDim, Context);

    /// <summary>Every allowed group size must suit the base specs at this head dimension (a per-token group runs along the head).</summary>
    private void CheckGroupSizes(IReadOnlyList<int> groupSizes)
    {
        foreach (int g in groupSizes)
        {
            if (g <= 0)
            {
                throw new ArgumentException($"--group-sizes {string.Join(",", groupSizes)}: group sizes must be positive, got {g}");
            }

            foreach (var spec in new[] { Real.Keys, Real.Values })
            {
                if ((spec with { GroupSize = g }).Problem(HeadDim) is { } problem)
                {
                    throw new ArgumentException($"--group-sizes {string.Join(",", groupSizes)}: {problem}");
                }
            }
        }
    }

    private LayerNorms CheckLayers(LayerNorms n) => n.Layers == Layers ? n
        : throw new ArgumentException($"--stats {n.Source}: has {n.Layers} layers but the model has {Layers}");
}
