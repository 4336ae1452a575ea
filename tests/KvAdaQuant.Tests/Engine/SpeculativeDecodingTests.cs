using KvAdaQuant.Engine;
using KvAdaQuant.Engine.Speculative;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// Speculative decoding changes how many tokens one pass over the weights yields, never the text: on the real models,
/// synthetic GGUF weights and quantized caches, greedy and sampled, with penalties and a grammar, the tokens, the text,
/// the stop reason, the log-probabilities and the session left behind (cache length, keys, logits) are those of decoding
/// one token at a time, while guesses are kept.
/// </summary>
public class SpeculativeDecodingTests
{
    // A prompt whose continuation repeats it in part: TinyStories models retell names and phrases.
    private const string Prompt = "Lily and Ben went to the park. Lily and Ben played on the swing. Then Lily and Ben";

    private sealed record Run(GenerationResult Result, int Position, float[] Logits, float[] Keys);

    private static Run Generate(LlamaModel m, string kv, Func<Sampler> sampler, SpeculativeDecoding? speculative, int maxTokens = 60, int threads = 1)
    {
        using var transformer = new Transformer(m, threads);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(256)));
        var generator = new Generator(session, m.Tokenizer!) { Speculative = speculative };
        var result = generator.Generate(m.Tokenizer!.Encode(Prompt, addBos: true), 0, maxTokens, sampler(), logprobs: new LogprobOptions(3));
        var keys = new float[session.Position * m.Config.HeadDim];
        session.Cache.Layers[m.Config.Layers - 1].ReadKeys(0, 0, session.Position, keys);
        return new Run(result, session.Position, session.Logits.ToArray(), keys);
    }

    private static void AssertSame(Run plain, Run spec, string what)
    {
        Assert.Equal(plain.Result.Tokens, spec.Result.Tokens);
        Assert.Equal(plain.Result.Text, spec.Result.Text);
        Assert.Equal(plain.Result.StopReason, spec.Result.StopReason);
        Assert.Equal(plain.Result.DecodeSteps, spec.Result.DecodeSteps);
        Assert.Equal(plain.Position, spec.Position);
        Assert.True(plain.Logits.AsSpan().SequenceEqual(spec.Logits), $"{what}: the session's last logits differ");
        Assert.True(plain.Keys.AsSpan().SequenceEqual(spec.Keys), $"{what}: the cached keys differ");
        var a = plain.Result.Logprobs!;
        var b = spec.Result.Logprobs!;
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Logprob, b[i].Logprob);
            Assert.Equal(a[i].Top.Select(t => t.Token), b[i].Top.Select(t => t.Token));
        }
    }

    [Theory]
    [InlineData("stories260K", "fp32", 0f)]
    [InlineData("stories260K", "k4v2", 0.9f)]
    [InlineData("stories3M-q80", "fp16", 0f)]
    [InlineData("stories3M-q80", "k4v2", 0f)]
    [InlineData("stories3M-q80", "k2v4:sym:g8", 1f)]
    [InlineData("stories3M-q80", "k4v2:rot:sink4", 0.7f)]
    public void Prompt_lookup_gives_the_tokens_of_one_at_a_time(string model, string kv, float temperature)
    {
        using var m = ModelLoader.Load(model);
        for (ulong seed = 1; seed <= (temperature > 0 ? 3UL : 1UL); seed++)
        {
            Sampler Make() => new(temperature, 0, temperature > 0 ? 0.95f : 1f, seed);
            var plain = Generate(m, kv, Make, null);
            var spec = Generate(m, kv, Make, new SpeculativeDecoding(new PromptLookupDraft(3), maxDraft: 6) { Adaptive = false });
            AssertSame(plain, spec, $"{model} {kv} T={temperature} seed {seed}");

            // The adaptive length (timing-dependent counts) changes nothing either.
            AssertSame(plain, Generate(m, kv, Make, new SpeculativeDecoding(new PromptLookupDraft(3), maxDraft: 6)), $"{model} {kv} T={temperature} seed {seed}, adaptive");
            var stats = spec.Result.Speculation!;
            Assert.True(stats.Drafted > 0 && stats.Batches > 0, $"{model} {kv}: nothing was drafted");
            Assert.InRange(stats.Accepted, 0, stats.Drafted);
            if (temperature == 0)
            {
                // Greedy TinyStories text repeats itself; some guesses must be kept.
                Assert.True(stats.Accepted > 0, $"{model} {kv}: no guess kept in {stats.Drafted}");
            }
        }
    }

    [Theory]
    [InlineData("tiny-llama:q8_0", "fp16")]
    [InlineData("tiny-llama:q4_0", "k4v2")]
    [InlineData("tiny-llama-64:f32", "fp32")]
    public void Prompt_lookup_on_synthetic_gguf_weights_with_two_threads(string model, string kv)
    {
        using var dir = new TempDir();
        using var m = BatchSizeDeterminismTests.Load(model, dir);
        Sampler Make() => new(0.8f, 20, 1f, 7);
        var plain = Generate(m, kv, Make, null, 40, threads: 2);
        var spec = Generate(m, kv, Make, new SpeculativeDecoding(new PromptLookupDraft(2), maxDraft: 4) { Adaptive = false }, 40, threads: 2);
        AssertSame(plain, spec, $"{model} {kv}");
    }

    [Fact]
    public void Penalties_and_a_grammar_see_the_same_sequence()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        var grammar = GbnfGrammar.Parse("root ::= word (\" \" word)* \".\"\nword ::= [a-zA-Z]+");
        Sampler Make() => new(0.8f, 40, 1f, 3)
        {
            RepeatPenalty = 1.1f,
            PresencePenalty = 0.2f,
            FrequencyPenalty = 0.1f,
            Grammar = new GrammarConstraint(grammar, m.Tokenizer!),
        };
        var plain = Generate(m, "fp16", Make, null, 50);
        var spec = Generate(m, "fp16", Make, new SpeculativeDecoding(new PromptLookupDraft(3), maxDraft: 5) { Adaptive = false });
        AssertSame(plain, spec, "penalties + grammar");
        Assert.True(spec.Result.Speculation!.Drafted > 0);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Mirostat_dry_xtc_typical_and_top_n_sigma_see_the_same_sequence(int mirostat)
    {
        using var m = ModelLoader.Load("stories3M-q80");
        Sampler Make() => new(0.9f, 0, 1f, 5)
        {
            Mirostat = mirostat,
            MirostatTau = 3f,
            DryMultiplier = 0.8f,
            DrySequenceBreakers = DrySequenceBreakers.FromStrings(m.Tokenizer!, DrySequenceBreakers.Defaults),
            XtcProbability = 0.3f,
            XtcThreshold = 0.1f,
            TypicalP = 0.95f,
            TopNSigma = 2f,
        };
        var plain = Generate(m, "fp16", Make, null, 50);
        var spec = Generate(m, "fp16", Make, new SpeculativeDecoding(new PromptLookupDraft(3), maxDraft: 5) { Adaptive = false }, 50);
        AssertSame(plain, spec, $"mirostat {mirostat} + dry + xtc + typical + top-n-sigma");
        Assert.True(spec.Result.Speculation!.Drafted > 0);
    }

    [Fact]
    public void Stopping_mid_batch_leaves_the_cache_as_one_at_a_time_would()
    {
        // Token limits that stop inside a batch of kept guesses: the cache keeps only the tokens fed.
        using var m = ModelLoader.Load("stories260K");
        foreach (int n in new[] { 1, 2, 5, 17, 33 })
        {
            var plain = Generate(m, "fp32", () => new Sampler(), null, n);
            var spec = Generate(m, "fp32", () => new Sampler(), new SpeculativeDecoding(new PromptLookupDraft(2), maxDraft: 8) { Adaptive = false }, n);
            AssertSame(plain, spec, $"max {n} tokens");
        }
    }

    [Fact]
    public void A_chat_continues_from_the_same_state()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        string Chat(SpeculativeDecoding? speculative)
        {
            using var transformer = new Transformer(m, 1);
            using var session = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(512)));
            var chat = new ChatSession(session, m.Tokenizer!, ChatTemplate.None) { Speculative = speculative };
            var text = new System.Text.StringBuilder();
            foreach (var turn in new[] { "Tom had a red ball. Tom", " The dog ran to Tom and", " Then Tom and the dog" })
            {
                text.Append(chat.Reply(turn, 30, new Sampler(0.5f, 0, 1f, 9)).Text).Append('|');
            }

            return text.ToString();
        }

        Assert.Equal(Chat(null), Chat(new SpeculativeDecoding(new PromptLookupDraft(3)) { Adaptive = false }));
        Assert.Equal(Chat(null), Chat(new SpeculativeDecoding(new PromptLookupDraft(3))));
    }

    [Fact]
    public void A_draft_model_identical_to_the_target_has_every_greedy_guess_kept()
    {
        using var m = ModelLoader.Load("stories260K");
        using var draftTransformer = new Transformer(m, 1);
        using var draftSession = new InferenceSession(draftTransformer, KvCacheFactory.Create("fp32", draftTransformer.CacheLayout(256)));
        var draft = new DraftModel(draftSession, minProbability: 0f);
        var plain = Generate(m, "fp32", () => new Sampler(), null, 80);
        var spec = Generate(m, "fp32", () => new Sampler(), new SpeculativeDecoding(draft, maxDraft: 4) { Adaptive = false }, 80);
        AssertSame(plain, spec, "self-draft");
        var stats = spec.Result.Speculation!;

        // Every guess is the target's own greedy token, so each batch keeps all 4 but those past the end of the run.
        Assert.True(stats.Drafted - stats.Accepted <= 4, $"{stats.Accepted} of {stats.Drafted} kept");
        Assert.True(stats.Batches <= (80 / 5) + 1, $"{stats.Batches} batches for 80 tokens");
    }

    [Fact]
    public void A_draft_model_with_a_2_bit_cache_guesses_for_the_target()
    {
        using var m = ModelLoader.Load("stories3M-q80");
        using var draftTransformer = new Transformer(m, 1);
        using var draftSession = new InferenceSession(draftTransformer, KvCacheFactory.Create("k2v2", draftTransformer.CacheLayout(256)));
        var plain = Generate(m, "fp16", () => new Sampler(0.7f, 0, 1f, 5), null, 60);
        var spec = Generate(m, "fp16", () => new Sampler(0.7f, 0, 1f, 5), new SpeculativeDecoding(new DraftModel(draftSession, 0.5f), maxDraft: 6) { Adaptive = false });
        AssertSame(plain, spec, "k2v2 draft");
        Assert.True(spec.Result.Speculation!.Accepted > 0);
    }

    [Fact]
    public void Draft_tokens_are_checked_against_the_target_vocabulary()
    {
        using var small = ModelLoader.Load("stories260K");
        using var large = ModelLoader.Load("stories3M-q80");
        var e = Assert.Throws<ArgumentException>(() => DraftModel.CheckSameVocabulary(large.Tokenizer!, small.Tokenizer!));
        Assert.Contains("the draft model's vocabulary has 512 tokens and the target's 4096", e.Message);
        DraftModel.CheckSameVocabulary(small.Tokenizer!, small.Tokenizer!);

        // Same size, BOS and EOS, but one token printed differently by both: named.
        var pieces = Enumerable.Range(0, small.Tokenizer!.VocabSize).Select(t => small.Tokenizer.DecodeBytes(-1, t)).ToArray();
        int changed = Array.FindIndex(pieces, p => p.Length > 1);
        pieces[changed] = [.. pieces[changed].Reverse()];
        var d = Assert.Throws<ArgumentException>(() => DraftModel.CheckSameVocabulary(small.Tokenizer, new PiecesTokenizer(small.Tokenizer, pieces)));
        Assert.StartsWith($"token {changed} is '", d.Message, StringComparison.Ordinal);

        // A token one side prints as nothing (special there) is not compared.
        pieces[changed] = [];
        DraftModel.CheckSameVocabulary(small.Tokenizer, new PiecesTokenizer(small.Tokenizer, pieces));
    }

    // A tokenizer that prints given bytes for each token and is otherwise another's.
    private sealed class PiecesTokenizer(ITokenizer inner, byte[][] pieces) : ITokenizer
    {
        public int VocabSize => inner.VocabSize;

        public int BosToken => inner.BosToken;

        public int EosToken => inner.EosToken;

        public List<int> Encode(string text, bool addBos) => inner.Encode(text, addBos);

        public byte[] DecodeBytes(int previous, int token) => pieces[token];
    }

    [Theory]
    [InlineData("k4v2:r16")]
    [InlineData("k2v2:kpc")]
    public void Caches_that_depend_on_the_batch_are_refused(string kv)
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64)));
        var generator = new Generator(session, m.Tokenizer!) { Speculative = new SpeculativeDecoding(new PromptLookupDraft()) };
        var e = Assert.Throws<ArgumentException>(() => generator.Generate("Once", 4, new Sampler()));
        Assert.Contains("speculative decoding needs a KV cache whose results do not depend on the batch", e.Message);
        Assert.Contains("is not", e.Message);
        var d = Assert.Throws<ArgumentException>(() => new DraftModel(new InferenceSession(transformer, KvCacheFactory.Create(kv, transformer.CacheLayout(64)))));
        Assert.Contains("cannot be cut back exactly", d.Message);
    }

    [Theory]
    [InlineData(0, 0, "--draft-max must be in 1..64, got 0")]
    [InlineData(65, 0, "--draft-max must be in 1..64, got 65")]
    [InlineData(4, 5, "--draft-min must be in 0..4 (--draft-max), got 5")]
    [InlineData(4, -1, "--draft-min must be in 0..4 (--draft-max), got -1")]
    public void Bad_draft_lengths_are_refused(int max, int min, string message)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SpeculativeDecoding(new PromptLookupDraft(), max, min));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_context_about_to_fill_drafts_only_what_fits()
    {
        using var m = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(m, 1);
        int promptTokens = m.Tokenizer!.Encode(Prompt, addBos: true).Count;
        foreach (int capacity in new[] { promptTokens + 1, promptTokens + 3, promptTokens + 20 })
        {
            GenerationResult Run(SpeculativeDecoding? s)
            {
                using var session = new InferenceSession(transformer, KvCacheFactory.Create("fp32", transformer.CacheLayout(capacity)));
                return new Generator(session, m.Tokenizer!) { Speculative = s }.Generate(Prompt, 100, new Sampler());
            }

            var plain = Run(null);
            var spec = Run(new SpeculativeDecoding(new PromptLookupDraft(2), maxDraft: 16) { Adaptive = false });
            Assert.Equal(plain.Tokens, spec.Tokens);
            Assert.Equal("context_full", spec.StopReason);
        }
    }
}
