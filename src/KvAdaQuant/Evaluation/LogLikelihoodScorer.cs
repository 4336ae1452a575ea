using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// Scores continuations as lm-evaluation-harness's <c>loglikelihood</c> requests do: trailing spaces of the context move
/// to the continuation; the pair is tokenized whole (BOS first) and the continuation's tokens are those after the
/// context's own tokenization; the sequence runs from an empty cache of the configured kind, and the continuation's
/// log-probabilities are summed. A sequence longer than the context window keeps BOS and its last tokens.
/// </summary>
public sealed class LogLikelihoodScorer : IDisposable
{
    private readonly Transformer _transformer;
    private readonly ITokenizer _tokenizer;
    private readonly IKvCache _cache;
    private readonly float[] _logits;
    private readonly float[] _logProbs;
    private const int Batch = 64;

    /// <summary>Creates a scorer with a cache of <paramref name="ctx"/> positions made by <paramref name="cacheFactory"/>.</summary>
    public LogLikelihoodScorer(Transformer transformer, ITokenizer tokenizer, Func<KvLayout, IKvCache> cacheFactory, int ctx)
    {
        _transformer = transformer;
        _tokenizer = tokenizer;
        Context = Math.Min(ctx, transformer.Config.ContextLength);
        _cache = cacheFactory(transformer.CacheLayout(Context));
        _logits = new float[Batch * transformer.Config.VocabSize];
        _logProbs = new float[transformer.Config.VocabSize];
    }

    /// <summary>Context window used.</summary>
    public int Context { get; }

    /// <summary>Splits a (context, continuation) pair into tokens the lm-evaluation-harness way.</summary>
    public (List<int> Context, List<int> Continuation) Encode(string context, string continuation)
    {
        int spaces = context.Length - context.TrimEnd(' ').Length;
        if (spaces > 0)
        {
            continuation = context[^spaces..] + continuation;
            context = context[..^spaces];
        }

        var whole = _tokenizer.Encode(context + continuation, addBos: true);
        var ctx = _tokenizer.Encode(context, addBos: true);
        int split = Math.Min(ctx.Count, whole.Count - 1);
        return (whole.GetRange(0, split), whole.GetRange(split, whole.Count - split));
    }

    /// <summary>Scores <paramref name="continuation"/> after <paramref name="context"/>.</summary>
    public ContinuationScore Score(string context, string continuation)
    {
        var (ctx, cont) = Encode(context, continuation);
        if (cont.Count >= Context)
        {
            throw new ArgumentException($"a continuation of {cont.Count} tokens does not fit the context window of {Context} tokens (--ctx)");
        }

        var seq = new List<int>(ctx.Count + cont.Count);
        seq.AddRange(ctx);
        seq.AddRange(cont);
        if (seq.Count > Context)
        {
            int drop = seq.Count - Context;
            seq.RemoveRange(1, drop);
        }

        int firstCont = seq.Count - cont.Count;
        int vocab = _transformer.Config.VocabSize;
        double ll = 0;
        bool greedy = true;
        _cache.Clear();
        var tokens = seq.ToArray();
        for (int b = 0; b < tokens.Length - 1; b += Batch)
        {
            int n = Math.Min(Batch, tokens.Length - 1 - b);
            bool needed = b + n > firstCont - 1;
            _transformer.Forward(tokens.AsSpan(b, n), b, _cache, _logits, allLogits: needed);
            if (!needed)
            {
                continue;
            }

            for (int t = 0; t < n; t++)
            {
                int pos = b + t;
                if (pos + 1 < firstCont)
                {
                    continue;
                }

                var logits = _logits.AsSpan(t * vocab, vocab);
                DistributionMath.LogSoftmax(logits, _logProbs);
                int target = tokens[pos + 1];
                ll += _logProbs[target];
                if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits) != target)
                {
                    greedy = false;
                }
            }
        }

        return new ContinuationScore(ll, greedy, cont.Count);
    }

    /// <inheritdoc/>
    public void Dispose() => _cache.Dispose();
}
