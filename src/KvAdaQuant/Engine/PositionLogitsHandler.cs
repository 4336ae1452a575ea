namespace KvAdaQuant.Engine;

/// <summary>Receives the logits after the <paramref name="index"/>-th token of a prefill (valid during the call only).</summary>
public delegate void PositionLogitsHandler(int index, ReadOnlySpan<float> logits);
