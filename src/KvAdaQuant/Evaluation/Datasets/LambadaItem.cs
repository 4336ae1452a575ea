namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>A LAMBADA passage split as lm-evaluation-harness's lambada_openai does: every word but the last, and " " + the last word.</summary>
public sealed record LambadaItem(string Context, string Target);
