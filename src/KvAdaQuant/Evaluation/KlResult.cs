namespace KvAdaQuant.Evaluation;

/// <summary>
/// How far a cache's next-token distributions are from the reference cache's on the same text: mean, 99th percentile
/// and maximum KL(P_ref || P_cache) per position, top-1 agreement, and both perplexities on the same positions.
/// </summary>
public sealed record KlResult(double MeanKl, double P99Kl, double MaxKl, double Top1Agreement, double Perplexity, double ReferencePerplexity, int Positions, double Seconds);
