namespace KvAdaQuant.Evaluation;

/// <summary>Perplexity over a text, llama.cpp style.</summary>
public sealed record PerplexityResult(double Perplexity, double MeanNll, int TokensScored, int Chunks, int ContextLength, int TextTokens, double Seconds)
{
    /// <summary>
    /// The standard error of <see cref="Perplexity"/>, as llama.cpp's "PPL = X +/- Y": Perplexity x the standard error of
    /// the mean token NLL, sqrt((mean(nll^2) - mean(nll)^2) / (N - 1)); NaN for fewer than two tokens.
    /// </summary>
    public double PerplexityUncertainty { get; init; } = double.NaN;
}
