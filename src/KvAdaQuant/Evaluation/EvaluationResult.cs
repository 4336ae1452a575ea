namespace KvAdaQuant.Evaluation;

/// <summary>One task's metrics for one cache (names as lm-evaluation-harness spells them where it has them), the items or positions scored, and the time taken.</summary>
public sealed record EvaluationResult(IReadOnlyDictionary<string, double> Metrics, int Items, double Seconds);
