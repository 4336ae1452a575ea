namespace KvAdaQuant.LlamaCpp;

/// <summary>Perplexity measured by llama.cpp.</summary>
/// <param name="Perplexity">exp of the mean negative log-likelihood.</param>
/// <param name="MeanNll">Mean negative log-likelihood per scored token (nats).</param>
/// <param name="TokensScored">Predictions scored.</param>
/// <param name="Chunks">Chunks evaluated.</param>
public sealed record LlamaCppPerplexityResult(double Perplexity, double MeanNll, int TokensScored, int Chunks)
{
    /// <summary>llama-perplexity's "+/- Y": Perplexity x the standard error of the mean token NLL; NaN for fewer than two tokens.</summary>
    public double PerplexityUncertainty { get; init; } = double.NaN;
}
