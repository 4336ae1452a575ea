using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.Evaluation;

/// <summary>llama.cpp's "PPL = X +/- Y": the perplexity's standard error from the scored tokens' NLLs.</summary>
public class PerplexityUncertaintyTests
{
    [Fact]
    public void The_uncertainty_is_the_perplexity_times_the_standard_error_of_the_token_nlls()
    {
        using var model = ModelLoader.Load("stories260K");
        var tok = model.Tokenizer!;
        var tokens = tok.Encode(DatasetReader.ReadText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..4000], addBos: true);
        using var t = new Transformer(model, 1);
        const int Ctx = 64;
        var result = PerplexityEvaluator.Evaluate(t, tokens, Ctx, l => new FullPrecisionKvCache(l, half: false), tok.BosToken);

        // Independently: token by token through a session, the second half of each chunk scored, log-softmax in double.
        var nlls = new List<double>();
        for (int c = 0; c < tokens.Count / Ctx; c++)
        {
            using var session = new InferenceSession(t, new FullPrecisionKvCache(t.CacheLayout(Ctx), half: false));
            var chunk = tokens.Skip(c * Ctx).Take(Ctx).ToArray();
            chunk[0] = tok.BosToken;
            for (int pos = 0; pos < Ctx - 1; pos++)
            {
                var logits = session.Decode(chunk[pos]).ToArray().Select(x => (double)x).ToArray();
                if (pos >= Ctx / 2)
                {
                    double max = logits.Max();
                    nlls.Add(-(logits[chunk[pos + 1]] - max - Math.Log(logits.Sum(x => Math.Exp(x - max)))));
                }
            }
        }

        double mean = nlls.Average();
        double stderr = Math.Sqrt(nlls.Sum(x => (x - mean) * (x - mean)) / nlls.Count / (nlls.Count - 1));
        Assert.Equal(nlls.Count, result.TokensScored);
        Assert.Equal(Math.Exp(mean), result.Perplexity, Math.Exp(mean) * 1e-5);
        Assert.Equal(Math.Exp(mean) * stderr, result.PerplexityUncertainty, Math.Exp(mean) * stderr * 1e-4);
        Assert.InRange(result.PerplexityUncertainty, 0.001 * result.Perplexity, 0.5 * result.Perplexity);
    }

    [Fact]
    public void The_command_prints_it_and_writes_it_to_json()
    {
        var (rc, stdout, stderr) = Cli.KvaqProcess.Run("perplexity", "-m", "stories260K", "--data", "wikitext-2/wiki.test.raw", "--chars", "3000", "--ctx", "64", "--json");
        Assert.True(rc == 0, stderr);
        var root = System.Text.Json.JsonDocument.Parse(stdout).RootElement;
        Assert.True(root.GetProperty("perplexity_uncertainty").GetDouble() > 0);
        (rc, stdout, stderr) = Cli.KvaqProcess.Run("perplexity", "-m", "stories260K", "--data", "wikitext-2/wiki.test.raw", "--chars", "3000", "--ctx", "64");
        Assert.True(rc == 0, stderr);
        Assert.Matches(@"^perplexity \d+\.\d{4} \+/- \d+\.\d{4} over \d+ tokens", stdout);
    }
}
