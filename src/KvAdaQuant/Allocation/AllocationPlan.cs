using KvAdaQuant.KvCache;

namespace KvAdaQuant.Allocation;

/// <summary>Turns a <see cref="BitAllocation"/> into the cache's <see cref="KvPlan"/>: every tensor gets its base spec (group, axis, symmetry, residual, sinks) with its allocated width and group size.</summary>
public static class AllocationPlan
{
    /// <summary>The plan for <paramref name="allocation"/> over the base specs of <paramref name="cost"/>.</summary>
    public static KvPlan ToKvPlan(BitAllocation allocation, SpecBitCost cost, string name)
    {
        var layers = new List<KvLayerSpec>(allocation.Layers);
        for (int l = 0; l < allocation.Layers; l++)
        {
            layers.Add(new KvLayerSpec(
                cost.Spec(KvTensorKind.Key, allocation.KeyBits[l], allocation.KeyGroups?[l]),
                cost.Spec(KvTensorKind.Value, allocation.ValueBits[l], allocation.ValueGroups?[l])));
        }

        return new KvPlan(layers, name, $"allocation {name}");
    }
}
