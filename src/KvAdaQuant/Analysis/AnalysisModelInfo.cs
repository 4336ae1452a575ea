namespace KvAdaQuant.Analysis;

/// <summary>The analysed model: where it came from and its shape.</summary>
public sealed record AnalysisModelInfo(string Path, string Format, int Layers, int Heads, int KvHeads, int HeadDim, int Dim, int VocabSize);
