namespace KvAdaQuant.GpuTestRunner;

/// <summary>Counts of one run's test results.</summary>
public sealed record TestRunSummary(int Total, int Passed, int Failed, int Skipped, double Seconds);
