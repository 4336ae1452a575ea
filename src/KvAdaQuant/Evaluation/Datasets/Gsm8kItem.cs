namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>A GSM8K problem: the question and the reference solution ending in <c>#### answer</c>.</summary>
public sealed record Gsm8kItem(string Question, string Answer);
