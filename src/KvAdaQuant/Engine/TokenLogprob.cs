namespace KvAdaQuant.Engine;

/// <summary>
/// A token at one position with its log-probability under the model and the position's most likely tokens: what
/// OpenAI's <c>logprobs</c> and llama-server's <c>n_probs</c> return, and transformers' <c>output_logits</c> turned into
/// probabilities. The distribution is the model's own (the softmax of the raw logits: temperature 1, before penalties,
/// top-k, top-p or min-p), so the figures show what the KV cache did to the model, not what the sampler did.
/// </summary>
/// <param name="Token">The token chosen (sampled, or the next prompt token).</param>
/// <param name="Logprob">ln p(<paramref name="Token"/>).</param>
/// <param name="Top">The most likely tokens, most likely first (ties: lower id first); empty when none were asked for.</param>
public sealed record TokenLogprob(int Token, float Logprob, IReadOnlyList<TopLogprob> Top);
