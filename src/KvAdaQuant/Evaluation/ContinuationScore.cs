namespace KvAdaQuant.Evaluation;

/// <summary>Log-likelihood of a continuation, whether greedy decoding would have produced it token for token, and its token count.</summary>
public readonly record struct ContinuationScore(double LogLikelihood, bool IsGreedy, int Tokens);
