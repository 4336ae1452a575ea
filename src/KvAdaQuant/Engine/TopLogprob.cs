namespace KvAdaQuant.Engine;

/// <summary>One of the most likely tokens at a position: its id and its log-probability under the model.</summary>
/// <param name="Token">The token id.</param>
/// <param name="Logprob">ln p(token), p the softmax of the position's logits.</param>
public readonly record struct TopLogprob(int Token, float Logprob);
