namespace KvAdaQuant.Analysis;

/// <summary>One figure written by <see cref="AnalysisPlotter"/>: its title and its PNG and SVG files.</summary>
public sealed record PlotFile(string Name, string Title, string PngPath, string SvgPath);
