namespace KvAdaQuant.Evaluation;

/// <summary>Perplexity over a text, llama.cpp style.</summary>
public sealed record PerplexityResult(double Perplexity, double MeanNll, int TokensScored, int Chunks, int ContextLength, int TextTokens, double Seconds);
