namespace KvAdaQuant.KvCache;

/// <summary>Builds caches from the <c>--kv</c> text syntax or a <see cref="KvPlan"/>.</summary>
public static class KvCacheFactory
{
    /// <summary>Creates a cache of <paramref name="layout"/> described by <paramref name="spec"/> (<c>fp32</c>, <c>fp16</c>, <c>k4v2:g32</c>, ...).</summary>
    public static IKvCache Create(string spec, KvLayout layout) => Create(KvPlan.Parse(spec, layout.Layers), layout);

    /// <summary>Creates a cache following <paramref name="plan"/>; uniform fp32/fp16 plans get the plain <see cref="FullPrecisionKvCache"/>.</summary>
    public static IKvCache Create(KvPlan plan, KvLayout layout)
    {
        plan.Validate(layout.Layers, layout.HeadDim);
        if (plan.IsUniformFullPrecision)
        {
            return new FullPrecisionKvCache(layout, half: plan.Layers[0].K.Bits == Quantization.KvBits.Fp16);
        }

        return new QuantizedKvCache(plan, layout);
    }

    /// <summary>
    /// The plan selected by the command-line options: <paramref name="kvPlanPath"/> (a JSON file) or <paramref name="kv"/>
    /// (text syntax; fp32 when both are absent). Giving both is an error.
    /// </summary>
    public static KvPlan ResolvePlan(string? kv, string? kvPlanPath, int layers)
    {
        if (!string.IsNullOrWhiteSpace(kvPlanPath))
        {
            if (!string.IsNullOrWhiteSpace(kv))
            {
                throw new ArgumentException($"--kv '{kv}' and --kv-plan {kvPlanPath} are exclusive: give one");
            }

            return KvPlan.Load(kvPlanPath);
        }

        return KvPlan.Parse(string.IsNullOrWhiteSpace(kv) ? "fp32" : kv, layers);
    }
}
