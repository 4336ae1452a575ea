using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using LLama.Native;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Our typical, top-n-sigma, XTC, Mirostat and DRY against llama.cpp's own samplers (LLamaSharp 0.30.0's native chain) on random
/// logits: the same tokens kept, and DRY the same penalized logits over the stories260K vocabulary with llama.cpp's
/// default sequence breakers.
/// </summary>
public class SamplerLlamaCppTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    private static float[] RandomLogits(Random rng, int n) => [.. Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 8) - 4))];

    // The chain's candidates after it ran over logits: (id, logit) of those it kept.
    private static (int Id, float Logit)[] Apply(SafeLLamaSamplerChainHandle chain, float[] logits)
    {
        var array = LLamaTokenDataArray.Create(logits);
        using (LLamaTokenDataArrayNative.Create(array, out var native))
        {
            chain.Apply(ref native);
            return [.. native.Data.ToArray().Select(d => ((int)d.ID, d.Logit))];
        }
    }

    // The chain's logits by token id after it has accepted `sequence` (the penalty samplers' history) and run over logits.
    private static float[] LogitsAfter(SafeLLamaSamplerChainHandle chain, IEnumerable<int> sequence, float[] logits)
    {
        foreach (int t in sequence)
        {
            chain.Accept((LLamaToken)t);
        }

        var byId = new float[logits.Length];
        foreach (var (id, logit) in Apply(chain, logits))
        {
            byId[id] = logit;
        }

        return byId;
    }

    [LlamaCppFact]
    public void Top_k_top_p_and_min_p_keep_the_tokens_llama_cpp_keeps()
    {
        // Each alone at temperature 1 (llama.cpp applies temperature last, kvaq first: at 1 the two orders agree).
        LlamaCppRuntime.Load();
        var rng = new Random(4);
        int truncated = 0;
        for (int round = 0; round < 40; round++)
        {
            float[] logits = RandomLogits(rng, 200);
            foreach (int k in new[] { 1, 5, 40, 199 })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddTopK(k);
                Assert.Equal(Apply(chain, logits).Select(t => t.Id).Order(), Sampler.Kept(logits, 1f, topK: k).Order());
            }

            foreach (float p in new[] { 0.05f, 0.5f, 0.9f, 0.99f })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddTopP(p, 1);
                var theirs = Apply(chain, logits).Select(t => t.Id).Order().ToArray();
                Assert.Equal(theirs, Sampler.Kept(logits, 1f, topP: p).Order());
                truncated += theirs.Length < logits.Length ? 1 : 0;
            }

            foreach (float p in new[] { 0.01f, 0.1f, 0.5f, 0.9f })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddMinP(p, 1);
                var theirs = Apply(chain, logits).Where(t => t.Logit != float.NegativeInfinity).Select(t => t.Id).Order().ToArray();
                Assert.Equal(theirs, Sampler.Kept(logits, 1f, minP: p).Order());
                truncated += theirs.Length < logits.Length ? 1 : 0;
            }
        }

        Assert.True(truncated > 200, $"only {truncated} of 320 cuts removed a token");
    }

    [LlamaCppFact]
    public void Repeat_frequency_and_presence_penalties_give_llama_cpps_logits()
    {
        LlamaCppRuntime.Load();
        var rng = new Random(3);
        for (int round = 0; round < 60; round++)
        {
            float[] logits = RandomLogits(rng, 50);
            int[] sequence = [.. Enumerable.Range(0, rng.Next(1, 80)).Select(_ => rng.Next(12))]; // repeats among a few tokens
            int lastN = round % 3 == 0 ? -1 : rng.Next(1, 64);
            float repeat = 0.5f + (float)(rng.NextDouble() * 1.5), frequency = (float)(rng.NextDouble() - 0.3), presence = (float)(rng.NextDouble() - 0.3);

            using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            chain.AddPenalties(lastN < 0 ? 128 : lastN, repeat, frequency, presence); // -1 (the whole sequence) as llama.cpp's common code passes it: the context
            var theirs = LogitsAfter(chain, sequence, logits);

            var mine = logits.ToArray();
            new Sampler { RepeatPenalty = repeat, RepeatLastN = lastN, FrequencyPenalty = frequency, PresencePenalty = presence }.ApplyPenalties(mine, sequence);
            Assert.Equal(theirs, mine);
        }
    }

    [LlamaCppFact]
    public void Typical_keeps_the_tokens_llama_cpp_keeps()
    {
        LlamaCppRuntime.Load();
        var rng = new Random(5);
        for (int round = 0; round < 40; round++)
        {
            float[] logits = RandomLogits(rng, 60);
            foreach (float p in new[] { 0.1f, 0.5f, 0.9f, 0.99f })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddTypical(p, 1);
                var theirs = Apply(chain, logits).Select(t => t.Id).Order();
                Assert.Equal(theirs, Sampler.TypicalKept(logits, p).Order());
            }
        }
    }

    [LlamaCppFact]
    public void Top_n_sigma_keeps_the_tokens_llama_cpp_keeps()
    {
        LlamaCppRuntime.Load();
        var rng = new Random(6);
        for (int round = 0; round < 40; round++)
        {
            float[] logits = RandomLogits(rng, 60);
            foreach (float n in new[] { 0.5f, 1f, 2f })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddTopNSigma(n);
                var theirs = Apply(chain, logits).Where(t => t.Logit != float.NegativeInfinity).Select(t => t.Id).Order();
                var ours = logits.ToArray();
                Sampler.TopNSigmaMask(ours, n);
                Assert.Equal(theirs, Enumerable.Range(0, ours.Length).Where(i => ours[i] != float.NegativeInfinity));
            }
        }
    }

    [LlamaCppFact]
    public void Xtc_when_it_fires_keeps_the_tokens_llama_cpp_keeps()
    {
        LlamaCppRuntime.Load();
        var rng = new Random(7);
        for (int round = 0; round < 40; round++)
        {
            // Peaked logits so that several tokens pass the threshold.
            float[] logits = [.. RandomLogits(rng, 30).Select((l, i) => i < 4 ? l + 6 : l)];
            foreach (float t in new[] { 0.05f, 0.1f, 0.2f })
            {
                using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                chain.AddXTC(1f, t, 1, 42);
                var theirs = Apply(chain, logits).Select(x => x.Id).Order();
                var p = logits.ToArray();
                Kernels.SoftMax(p);
                int[] sorted = [.. Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).ThenBy(i => i)];
                int cut = Sampler.XtcCut(p, sorted, t);
                Assert.Equal(theirs, sorted[cut..].Order());
            }
        }
    }

    // (ids kept, the id selected) after the chain ran over logits.
    private static (int[] Kept, int Selected) Select(SafeLLamaSamplerChainHandle chain, float[] logits)
    {
        var array = LLamaTokenDataArray.Create(logits);
        using (LLamaTokenDataArrayNative.Create(array, out var native))
        {
            chain.Apply(ref native);
            var data = native.Data.ToArray();
            return ([.. data.Select(d => (int)d.ID)], (int)data[(int)native.Selected].ID);
        }
    }

    [LlamaCppFact]
    public void Mirostat_keeps_as_many_tokens_as_llama_cpp_and_moves_mu_alike()
    {
        LlamaCppRuntime.Load();
        var rng = new Random(9);
        int wide = 0;
        for (int round = 0; round < 30; round++)
        {
            // Odd rounds Zipf-like (Mirostat 1's model: p_i ~ 1 / i^s, s > 1, a little noise, shuffled), even ones uniform noise.
            double s = 1.1 + rng.NextDouble();
            float[] logits = round % 2 == 1
                ? [.. Enumerable.Range(1, 200).Select(i => (float)((-s * Math.Log(i)) + (0.01 * rng.NextDouble()))).OrderBy(_ => rng.Next())]
                : RandomLogits(rng, 200);
            var p = logits.ToArray();
            Kernels.SoftMax(p);
            int[] sorted = [.. Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).ThenBy(i => i)];
            float tau = 2f + (float)(rng.NextDouble() * 5), eta = 0.1f + (float)(rng.NextDouble() * 0.5);

            // Mirostat 1 from mu = 2 tau: the top-k estimated from the Zipf exponent.
            using (var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default()))
            {
                chain.AddMirostat1Sampler(p.Length, 42, tau, eta, 100);
                int k = Sampler.MirostatV1Count(p, sorted, 2 * tau, p.Length);
                Assert.Equal(Select(chain, logits).Kept.Length, k);
                wide += k > 1 ? 1 : 0;
            }

            // Mirostat 2, three draws: the cut at mu, then mu moved by the surprise of the token llama.cpp drew.
            using (var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default()))
            {
                chain.AddMirostat2Sampler(42, tau, eta);
                float mu = 2 * tau;
                for (int step = 0; step < 3; step++)
                {
                    var (kept, selected) = Select(chain, logits);
                    int count = Sampler.MirostatV2Count(p, sorted, mu);
                    Assert.Equal(kept.Length, count);
                    float share = p[selected] / sorted[..count].Sum(i => p[i]);
                    mu = Sampler.MirostatNextMu(mu, share, tau, eta);
                }
            }
        }

        Assert.True(wide >= 10, $"Mirostat 1 kept more than one token in only {wide} rounds");
    }

    [LlamaCppFact]
    public void Dry_penalizes_the_logits_as_llama_cpp_does()
    {
        LlamaCppRuntime.Load();
        string gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var tok = ours.Tokenizer!;
        // llama.cpp's defaults, and with them a breaker of several tokens (heads and tails, the tails tokenized by each side).
        string[][] breakerSets = [[.. DrySequenceBreakers.Defaults], [.. DrySequenceBreakers.Defaults, "Lily said", "the dog"]];
        var processed = breakerSets.Select(b => DrySequenceBreakers.FromStrings(tok, b)).ToArray();
        var breakers = processed[0];
        Assert.Contains(Enumerable.Range(0, tok.VocabSize), t => processed[1].TailsOf(t).Any(tail => tail.Length > 0));
        // The whole model, not its vocabulary only: DRY's -1 and its window need the training context llama.cpp reads.
        using var model = LlamaCppChains.LoadModel(gguf);

        // Sequences over a few words and the breakers' tokens, so that repeats and breakers are common.
        int[] alphabet = [.. tok.Encode("Lily said: \"the dog* ran\n", addBos: false).Distinct()];
        Assert.Contains(alphabet, t => breakers.IsSingleTokenBreaker(t));
        var rng = new Random(8);
        int penalized = 0;
        for (int round = 0; round < 60; round++)
        {
            int[] sequence = [.. Enumerable.Range(0, rng.Next(4, 60)).Select(_ => alphabet[rng.Next(alphabet.Length)])];
            float multiplier = 0.5f + (float)rng.NextDouble(), dryBase = 1.1f + (float)rng.NextDouble();
            int allowed = rng.Next(1, 4), lastN = rng.Next(8, 80);
            float[] logits = RandomLogits(rng, ours.Config.VocabSize);

            using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            int set = round % 2;
            breakers = processed[set];
            chain.AddDry(model, breakerSets[set], multiplier, dryBase, allowed, lastN);
            var theirs = LogitsAfter(chain, sequence, logits);

            var mine = logits.ToArray();
            new Sampler { DryMultiplier = multiplier, DryBase = dryBase, DryAllowedLength = allowed, DryPenaltyLastN = lastN, DrySequenceBreakers = breakers }.ApplyDry(mine, sequence);
            int bad = Enumerable.Range(0, mine.Length).FirstOrDefault(i => theirs[i] != mine[i], -1);
            string Text(int t) => System.Text.Encoding.UTF8.GetString(tok.DecodeBytes(-1, t)).Replace("\n", "\\n", StringComparison.Ordinal);
            Assert.True(bad < 0, bad < 0 ? "" : $"round {round} token {bad} '{Text(bad)}' theirs {theirs[bad]} mine {mine[bad]} orig {logits[bad]} single {breakers.IsSingleTokenBreaker(bad)} allowed {allowed} lastN {lastN}; seq {string.Join(" ", sequence.Select(t => $"{t}'{Text(t)}'{(breakers.IsSingleTokenBreaker(t) ? "B" : "")}{(breakers.TailsOf(t).Count > 0 ? "H" + breakers.TailsOf(t).Count : "")}"))}");
            penalized += mine.Zip(logits).Count(x => x.First != x.Second);
        }

        Assert.True(penalized > 20, $"only {penalized} logits were penalized: the comparison would not show much");
    }
}
