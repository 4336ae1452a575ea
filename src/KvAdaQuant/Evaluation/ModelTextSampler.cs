using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// In-distribution text for the <c>kl</c> task: sequences sampled from the model itself through the unquantized (FP32)
/// cache, from BOS, at temperature 1 with a fixed seed, each running to EOS or <c>tokensPerSequence</c>. Deterministic for
/// a given model, seed and length.
/// </summary>
public static class ModelTextSampler
{
    /// <summary>Samples until at least <paramref name="totalTokens"/> tokens are collected; returns the token stream (each sequence BOS first).</summary>
    public static List<int> Sample(Transformer transformer, ITokenizer tokenizer, int totalTokens, int tokensPerSequence, ulong seed)
    {
        if (totalTokens < 1 || tokensPerSequence < 2)
        {
            throw new ArgumentException($"model-sampled text: need positive token counts, got {totalTokens} total, {tokensPerSequence} per sequence");
        }

        int per = Math.Min(tokensPerSequence, transformer.Config.ContextLength);
        var sampler = new Sampler(temperature: 1f, seed: seed);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(per), half: false));
        var stream = new List<int>(Math.Min(totalTokens, 1 << 20));
        while (stream.Count < totalTokens)
        {
            session.Reset();
            int token = tokenizer.BosToken;
            stream.Add(token);
            var logits = session.Decode(token);
            for (int i = 1; i < per && stream.Count < totalTokens; i++)
            {
                token = sampler.Sample(logits);
                if (token == tokenizer.EosToken || token == tokenizer.BosToken)
                {
                    break;
                }

                stream.Add(token);
                if (i < per - 1)
                {
                    logits = session.Decode(token);
                }
            }
        }

        return stream;
    }
}
