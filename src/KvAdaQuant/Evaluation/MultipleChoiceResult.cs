namespace KvAdaQuant.Evaluation;

/// <summary>Accuracy (<c>acc</c>: highest log-likelihood) and length-normalised accuracy (<c>acc_norm</c>: highest log-likelihood per character of the choice) over <see cref="Items"/> questions.</summary>
public sealed record MultipleChoiceResult(double Acc, double AccNorm, int Items, double Seconds);
