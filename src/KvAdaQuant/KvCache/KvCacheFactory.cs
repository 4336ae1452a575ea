namespace KvAdaQuant.KvCache;

/// <summary>Builds caches from the <c>--kv</c> text syntax or a <see cref="KvPlan"/>.</summary>
public static class KvCacheFactory
{
    /// <summary>Creates a cache of <paramref name="layout"/> described by <paramref name="spec"/> (<c>fp32</c>, <c>fp16</c>, <c>k4v2:g32</c>, ...).</summary>
    public static IKvCache Create(string spec, KvLayout layout) => Create(KvPlan.Parse(spec, layout.Layers), layout);

    /// <summary>Creates a cache following <paramref name="plan"/>; uniform fp32/fp16 plans get the plain <see cref="FullPrecisionKvCache"/>.</summary>
    public static IKvCache Create(KvPlan plan, KvLayout layout) => Create(plan, layout, AttentionPrecision.Fp32);

    /// <summary>
    /// Creates a cache following <paramref name="plan"/> whose attention scores use <paramref name="attention"/>. With
    /// <see cref="AttentionPrecision.Int8"/>, layers whose keys the int8 kernel cannot read keep FP32 attention; a plan
    /// where no layer qualifies (FP16/FP32 keys, per-channel keys, 1-, 1.58-, 3-, 5- or 6-bit keys, ...) is an
    /// <see cref="ArgumentException"/> naming <c>--attn-int8</c>. <see cref="AttentionPrecision.Int8Values"/> also needs
    /// a layer whose values the byte-weight kernel reads, else the exception names <c>--attn-int8-values</c>.
    /// </summary>
    public static IKvCache Create(KvPlan plan, KvLayout layout, AttentionPrecision attention)
    {
        plan.Validate(layout.Layers, layout.HeadDim);
        if (attention is AttentionPrecision.Int8 or AttentionPrecision.Int8Values)
        {
            string flag = attention == AttentionPrecision.Int8Values ? "--attn-int8-values" : "--attn-int8";
            if (plan.IsUniformFullPrecision)
            {
                throw new ArgumentException($"{flag}: the int8 attention path reads quantized keys, but the KV plan '{plan.Name}' stores them as full-precision floats; use a quantized key cache such as --kv k4v2");
            }

            var cache = new QuantizedKvCache(plan, layout, attention);
            if (cache.Int8Layers == 0)
            {
                cache.Dispose();
                throw new ArgumentException($"{flag}: no layer of the KV plan '{plan.Name}' has keys the int8 kernel reads (per-token groups of 2-, 4- or 8-bit codes, head dim x bits a multiple of 128 (head dim 32 at 4 or 8 bits, 64 at 2 bits), at most 4 groups per head, group channels a multiple of 32 / bits); head dim {layout.HeadDim}");
            }

            if (attention == AttentionPrecision.Int8Values && cache.Int8ValueLayers == 0)
            {
                cache.Dispose();
                throw new ArgumentException($"{flag}: no layer of the KV plan '{plan.Name}' has values the byte-weight kernel reads (per-token groups of 2-bit codes: 32 channels at head dim 32, 32 or a multiple of 4 from 64 channels at head dims that are multiples of 64; of 4-bit codes: a multiple of 32 channels at head dim 32 or a multiple of 64; in a layer whose keys take int8 scores, on a CPU with AVX-512 VBMI); head dim {layout.HeadDim}");
            }

            return cache;
        }

        if (plan.IsUniformFullPrecision)
        {
            return new FullPrecisionKvCache(layout, half: plan.Layers[0].K.Bits == Quantization.KvBits.Fp16);
        }

        return new QuantizedKvCache(plan, layout);
    }

    /// <summary>
    /// The plan selected by the command-line options: <paramref name="kvPlanPath"/> (a JSON file) or <paramref name="kv"/>
    /// (text syntax; fp32 when both are absent, i.e. null). Giving both is an error, and so is an option given empty
    /// (<c>--kv ''</c> is not fp32).
    /// </summary>
    public static KvPlan ResolvePlan(string? kv, string? kvPlanPath, int layers)
    {
        if (kvPlanPath is not null)
        {
            if (string.IsNullOrWhiteSpace(kvPlanPath))
            {
                throw new ArgumentException("--kv-plan: empty path (give a JSON plan file)");
            }

            if (kv is not null)
            {
                throw new ArgumentException($"--kv '{kv}' and --kv-plan {kvPlanPath} are exclusive: give one");
            }

            return KvPlan.Load(kvPlanPath);
        }

        return KvPlan.Parse(kv ?? "fp32", layers);
    }
}
