using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>The K and V specs of one layer.</summary>
public sealed record KvLayerSpec(KvSpec K, KvSpec V);
