namespace KvAdaQuant.Analysis;

/// <summary>Progress of one stage of <see cref="KvAnalyzer"/>: <see cref="Done"/> of <see cref="Total"/> steps.</summary>
public sealed record AnalysisProgress(string Stage, int Done, int Total);
