namespace KvAdaQuant.Evaluation;

/// <summary>GSM8K exact match under both filters, over <see cref="Items"/> problems, with the few-shot count actually used (fewer when the prompt did not fit the context).</summary>
public sealed record Gsm8kResult(double StrictMatch, double FlexibleExtract, int Items, int MinShots, int MaxShots, double Seconds);
