namespace KvAdaQuant.Evaluation;

/// <summary>
/// One evaluated cache configuration: its name, the K and V widths when uniform (for grids), its real average bits per
/// element, and the result; or, when the cache refused the run (e.g. non-finite values), the error instead of metrics.
/// </summary>
public sealed record EvaluationRow(string Name, double? KeyBits, double? ValueBits, double AverageBits, EvaluationResult Result, string? Error = null);
