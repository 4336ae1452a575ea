namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>
/// One multiple-choice question as lm-evaluation-harness scores it: for choice i the log-likelihood of
/// <see cref="Continuations"/>[i] after <see cref="Contexts"/>[i]; <see cref="Choices"/> are the choice strings whose
/// character lengths normalise <c>acc_norm</c>.
/// </summary>
public sealed record MultipleChoiceItem(string Id, IReadOnlyList<string> Contexts, IReadOnlyList<string> Continuations, IReadOnlyList<string> Choices, int Gold);
