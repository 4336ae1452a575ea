using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// GSM8K few-shot generation, lm-evaluation-harness's gsm8k task: each shot is "Question: {q}\nAnswer: {answer}", shots
/// and the problem ("Question: {q}\nAnswer:") are joined by blank lines; greedy decoding through the cache under test (so the
/// quantized cache holds the prompt and every generated token) until "Question:", "&lt;/s&gt;", "&lt;|im_end|&gt;", EOS, the
/// token limit or the end of the context; the text is cut at the first stop string and scored by
/// <see cref="Gsm8kAnswerExtractor"/>. lm-eval draws its shots from the train split; only the test split is at hand, so the
/// first <c>shots</c> test problems serve as shots and are not evaluated. When the prompt and the generation budget do not fit
/// the context, shots are dropped one by one (and, at zero shots, the question is cut from the left).
/// </summary>
public sealed class Gsm8kEvaluator
{
    /// <summary>Stop strings.</summary>
    public static readonly IReadOnlyList<string> StopStrings = ["Question:", "</s>", "<|im_end|>"];

    private readonly Transformer _transformer;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates the evaluator.</summary>
    public Gsm8kEvaluator(Transformer transformer, ITokenizer tokenizer)
    {
        _transformer = transformer;
        _tokenizer = tokenizer;
    }

    /// <summary>The few-shot prompt for <paramref name="item"/> with <paramref name="shots"/>.</summary>
    public static string Prompt(IReadOnlyList<Gsm8kItem> shots, Gsm8kItem item)
    {
        var sb = new StringBuilder();
        foreach (var s in shots)
        {
            sb.Append("Question: ").Append(s.Question).Append("\nAnswer: ").Append(s.Answer).Append("\n\n");
        }

        return sb.Append("Question: ").Append(item.Question).Append("\nAnswer:").ToString();
    }

    /// <summary>Cuts <paramref name="text"/> at the first stop string.</summary>
    public static string CutAtStop(string text)
    {
        int cut = text.Length;
        foreach (var s in StopStrings)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && i < cut)
            {
                cut = i;
            }
        }

        return text[..cut];
    }

    /// <summary>Evaluates problems after the first <paramref name="shots"/> of <paramref name="all"/>, at most <paramref name="limit"/> of them.</summary>
    public Gsm8kResult Evaluate(IReadOnlyList<Gsm8kItem> all, int shots, int limit, int maxNewTokens, int ctx, Func<KvLayout, IKvCache> cacheFactory, Action<int, int>? progress = null)
    {
        if (shots < 0 || shots >= all.Count)
        {
            throw new ArgumentException($"--shots {shots}: must be between 0 and {all.Count - 1} (the dataset has {all.Count} problems)");
        }

        if (maxNewTokens < 1)
        {
            throw new ArgumentException($"--max-tokens must be positive, got {maxNewTokens}");
        }

        ctx = Math.Min(ctx, _transformer.Config.ContextLength);
        if (maxNewTokens >= ctx)
        {
            throw new ArgumentException($"--max-tokens {maxNewTokens} leaves no room for the prompt in a context of {ctx}");
        }

        var shotItems = all.Take(shots).ToArray();
        var items = all.Skip(shots).Take(limit).ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var session = new InferenceSession(_transformer, cacheFactory(_transformer.CacheLayout(ctx)));
        int strict = 0;
        int flexible = 0;
        int minShots = int.MaxValue;
        int maxShots = 0;
        for (int q = 0; q < items.Length; q++)
        {
            int k = shots;
            List<int> prompt;
            while (true)
            {
                prompt = _tokenizer.Encode(Prompt(shotItems[..k], items[q]), addBos: true);
                if (prompt.Count + maxNewTokens <= ctx || k == 0)
                {
                    break;
                }

                k--;
            }

            if (prompt.Count + maxNewTokens > ctx)
            {
                prompt.RemoveRange(1, prompt.Count + maxNewTokens - ctx);
            }

            minShots = Math.Min(minShots, k);
            maxShots = Math.Max(maxShots, k);
            string response = Generate(session, prompt, maxNewTokens);
            strict += Gsm8kAnswerExtractor.IsMatch(Gsm8kAnswerExtractor.Strict(response), items[q].Answer) ? 1 : 0;
            flexible += Gsm8kAnswerExtractor.IsMatch(Gsm8kAnswerExtractor.Flexible(response), items[q].Answer) ? 1 : 0;
            progress?.Invoke(q + 1, items.Length);
        }

        return new Gsm8kResult((double)strict / items.Length, (double)flexible / items.Length, items.Length, minShots, maxShots, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>, cut at the first stop string.</summary>
    public string Generate(InferenceSession session, IReadOnlyList<int> prompt, int maxNewTokens)
    {
        session.Reset();
        var logits = session.Prefill(prompt.ToArray());
        var generated = new List<int>();
        var prefixLength = _tokenizer.Decode(prompt).Length;
        string text = string.Empty;
        while (generated.Count < maxNewTokens && session.Position < session.Cache.Layout.Capacity)
        {
            int next = Sampler.ArgMax(logits);
            if (next == _tokenizer.EosToken)
            {
                break;
            }

            generated.Add(next);
            var all = new List<int>(prompt);
            all.AddRange(generated);
            text = _tokenizer.Decode(all)[prefixLength..];
            if (StopStrings.Any(s => text.Contains(s, StringComparison.Ordinal)))
            {
                break;
            }

            if (session.Position >= session.Cache.Layout.Capacity)
            {
                break;
            }

            logits = session.Decode(next);
        }

        return CutAtStop(text);
    }
}
