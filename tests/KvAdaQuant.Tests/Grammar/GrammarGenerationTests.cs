using System.Diagnostics;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// Grammar-constrained generation on the real TinyStories models: the text follows the grammar and ends with EOS only
/// once the grammar is complete; a grammar that allows everything changes nothing; the log-probabilities stay the
/// model's; a chat's turns each start the grammar over; a dead end stops cleanly.
/// </summary>
public class GrammarGenerationTests(ITestOutputHelper output)
{
    private const string Prompt = "Once upon a time";

    [Theory]
    [InlineData("stories260K", "fp32", 0f)]
    [InlineData("stories260K", "fp32", 1f)]
    [InlineData("stories3M-q80", "fp32", 0f)]
    [InlineData("stories3M-q80", "k4v2", 0.8f)]
    public void A_choice_grammar_gives_exactly_one_of_the_choices_then_EOS(string model, string kv, float temperature)
    {
        using var h = new Open(model, kv);
        var grammar = GbnfGrammar.Parse("root ::= (\"yes\" | \"no\" | \"maybe\")");
        for (ulong seed = 1; seed <= (temperature > 0 ? 5UL : 1UL); seed++)
        {
            var sampler = new Sampler(temperature, 0, 1f, seed) { Grammar = new GrammarConstraint(grammar, h.Tokenizer) };
            var result = h.Generator.Generate(Prompt, 30, sampler);
            Assert.Contains(result.Text, new[] { "yes", "no", "maybe" });
            Assert.Equal("eos", result.StopReason);
            Assert.True(sampler.Grammar!.IsEnded);
        }
    }

    [Theory]
    [InlineData("stories260K", "fp32", 0f)]
    [InlineData("stories3M-q80", "fp32", 0f)]
    [InlineData("stories3M-q80", "k4v2", 1f)]
    public void A_pattern_grammar_gives_text_the_grammar_matches(string model, string kv, float temperature)
    {
        using var h = new Open(model, kv);
        var grammar = GbnfGrammar.Parse("root ::= [0-9]{3} \"-\" [a-z]{1,8} \".\"");
        for (ulong seed = 1; seed <= 3; seed++)
        {
            var sampler = new Sampler(temperature, 40, 1f, seed) { Grammar = new GrammarConstraint(grammar, h.Tokenizer) };
            var result = h.Generator.Generate(Prompt, 40, sampler);
            Assert.True(grammar.Matches(result.Text), result.Text);
            Assert.Equal("eos", result.StopReason);
            Assert.Equal(result.Text, h.Tokenizer.Decode([.. result.PromptTokens, .. result.Tokens])[Prompt.Length..]); // what generate prints
        }
    }

    [Theory]
    [InlineData("stories260K", "fp32", "")]
    [InlineData("stories260K", "k4v2", "")]
    [InlineData("stories3M-q80", "fp32", "")]
    [InlineData("stories3M-q80", "k4v2", "")]
    [InlineData("stories3M-q80", "k4v2", "Lily")]
    public void A_grammar_that_allows_everything_gives_the_same_greedy_tokens(string model, string kv, string prompt)
    {
        using var h = new Open(model, kv);
        var plain = h.Generator.Generate(prompt, 120, new Sampler());
        var constraint = new GrammarConstraint(GbnfGrammar.Parse("root ::= [^\\x00]*"), h.Tokenizer);
        var constrained = h.Generator.Generate(prompt, 120, new Sampler { Grammar = constraint });
        Assert.Equal(plain.Tokens, constrained.Tokens);
        Assert.Equal(plain.StopReason, constrained.StopReason);
        Assert.Equal(0, constraint.MaskCount); // every greedy token was allowed: no full mask was needed
    }

    [Fact]
    public void EOS_is_blocked_until_the_grammar_is_complete()
    {
        using var h = new Open("stories260K", "fp32");
        var forceEos = new Dictionary<int, float> { [h.Tokenizer.EosToken] = 100f };
        Assert.Empty(h.Generator.Generate(Prompt, 20, new Sampler { LogitBias = forceEos }).Tokens); // EOS at once without a grammar

        var grammar = GbnfGrammar.Parse("root ::= \"The end\" [.!]");
        var result = h.Generator.Generate(Prompt, 20, new Sampler { LogitBias = forceEos, Grammar = new GrammarConstraint(grammar, h.Tokenizer) });
        Assert.Equal("eos", result.StopReason);
        Assert.True(grammar.Matches(result.Text), result.Text);

        // Cut short: the limit ends it, and the text is a prefix the grammar accepts but not a sentence.
        var cut = h.Generator.Generate(Prompt, 2, new Sampler { LogitBias = forceEos, Grammar = new GrammarConstraint(grammar, h.Tokenizer) });
        Assert.Equal("max_tokens", cut.StopReason);
        var m = new GrammarMatcher(grammar);
        Assert.True(m.TryAccept(cut.Text), cut.Text);
        Assert.False(m.IsComplete);
    }

    [Fact]
    public void The_constraint_follows_the_tokenizer_bytes_after_BOS_and_after_other_tokens()
    {
        using var h = new Open("stories260K", "fp32");
        var tok = h.Tokenizer;
        var c = new GrammarConstraint(GbnfGrammar.Parse("root ::= \"Once\" \" upon\""), tok);
        int once = tok.Encode("Once", addBos: true)[1]; // " Once" with the SentencePiece space: "Once" after BOS
        c.Reset(tok.BosToken);
        Assert.False(c.IsAllowed(tok.EosToken));
        Assert.True(c.IsAllowed(once));
        c.Reset(once); // after another token the same piece keeps its space: refused
        Assert.False(c.IsAllowed(once));
        c.Reset(tok.BosToken);
        c.Accept(once);
        var allowed = new bool[tok.VocabSize];
        int n = c.ComputeAllowed(allowed);
        Assert.True(n > 0);
        for (int t = 0; t < tok.VocabSize; t++)
        {
            byte[] bytes = tok.DecodeBytes(once, t);
            bool expected = bytes.Length > 0 && " upon"u8.StartsWith(bytes);
            Assert.True(expected == allowed[t], $"token {t} '{System.Text.Encoding.UTF8.GetString(bytes)}'");
            Assert.Equal(allowed[t], c.IsAllowed(t));
        }

        Assert.False(allowed[tok.EosToken]);
        Assert.False(allowed[tok.BosToken]);
    }

    [Fact]
    public void Log_probabilities_stay_the_models_own()
    {
        using var h = new Open("stories3M-q80", "fp32");
        var plain = h.Generator.Generate(h.Tokenizer.Encode(Prompt, addBos: true), 0, 1, new Sampler(), logprobs: new LogprobOptions(3));
        var grammar = new GrammarConstraint(GbnfGrammar.Parse("root ::= (\"yes\" | \"no\")"), h.Tokenizer);
        var constrained = h.Generator.Generate(h.Tokenizer.Encode(Prompt, addBos: true), 0, 5, new Sampler { Grammar = grammar }, logprobs: new LogprobOptions(3));
        Assert.NotEqual(plain.Tokens[0], constrained.Tokens[0]);
        Assert.Equal(plain.Logprobs![0].Top, constrained.Logprobs![0].Top); // the same distribution at the first position
        Assert.True(constrained.Logprobs[0].Logprob < plain.Logprobs[0].Logprob);
    }

    [Fact]
    public void Each_chat_turn_starts_the_grammar_over()
    {
        using var h = new Open("stories260K", "fp32");
        var grammar = GbnfGrammar.Parse("root ::= (\"Yes\" | \"No\") \".\"");
        var sampler = new Sampler { Grammar = new GrammarConstraint(grammar, h.Tokenizer) };
        var chat = new ChatSession(h.Session, h.Tokenizer, ChatTemplate.None);
        foreach (string message in new[] { "Is the sky blue?", " Is the sun hot?", " Really?" })
        {
            var reply = chat.Reply(message, 10, sampler);
            Assert.True(grammar.Matches(reply.Text), reply.Text);
            Assert.Equal("eos", reply.StopReason);
        }
    }

    [Fact]
    public void A_dead_end_stops_cleanly_with_its_own_reason()
    {
        // A tiny vocabulary that cannot spell 'c'.
        var tok = new TinyTokenizer("a", "b");
        var grammar = GbnfGrammar.Parse("root ::= \"a\" \"c\"");
        var c = new GrammarConstraint(grammar, tok);
        var sampler = new Sampler { Grammar = c };
        c.Reset(tok.BosToken);
        Assert.Equal(3, sampler.Sample([0f, 0f, 5f, 0f, 9f])); // EOS and 'b' refused: 'a'
        Assert.False(c.IsDeadEnd);
        Assert.Equal(tok.EosToken, sampler.Sample([0f, 0f, 0f, 1f, 2f]));
        Assert.True(c.IsDeadEnd);
        Assert.False(c.IsComplete);
    }

    [Fact]
    public void Cost_per_constrained_token_on_stories3M()
    {
        // Not a timed assertion: the figures go to the test output (and the README).
        using var h = new Open("stories3M-q80", "fp32");
        const string json = """
            root ::= "{" ws "\"name\":" ws string "," ws "\"age\":" ws [0-9]{1,3} ws "}"
            string ::= "\"" [a-zA-Z ]{1,20} "\""
            ws ::= " "?
            """;
        var grammar = GbnfGrammar.Parse(json);
        var constraint = new GrammarConstraint(grammar, h.Tokenizer);
        constraint.Reset(h.Tokenizer.BosToken);
        var allowed = new bool[h.Tokenizer.VocabSize];
        constraint.ComputeAllowed(allowed); // warm: the token table is built
        var sw = Stopwatch.StartNew();
        const int masks = 200;
        for (int i = 0; i < masks; i++)
        {
            constraint.ComputeAllowed(allowed);
        }

        double maskMs = sw.Elapsed.TotalMilliseconds / masks;
        constraint.Reset(h.Tokenizer.BosToken);
        var permissive = new GrammarConstraint(GbnfGrammar.Parse("root ::= [^\\x00]*"), h.Tokenizer);
        permissive.Reset(h.Tokenizer.BosToken);
        permissive.ComputeAllowed(allowed);
        sw.Restart();
        for (int i = 0; i < masks; i++)
        {
            permissive.ComputeAllowed(allowed);
        }

        double permissiveMs = sw.Elapsed.TotalMilliseconds / masks;

        const int n = 100;
        h.Generator.Generate(Prompt, n, new Sampler()); // warm
        var plain = h.Generator.Generate(Prompt, n, new Sampler());
        var sampler = new Sampler { Grammar = new GrammarConstraint(grammar, h.Tokenizer) };
        var constrained = h.Generator.Generate(Prompt, n, sampler);
        Assert.True(grammar.Matches(constrained.Text), constrained.Text);
        // The sampler alone on the model's logits after the prompt, per token: no grammar; a grammar that allows the
        // greedy token (checked only); one that refuses it (a full mask and a second draw).
        h.Generator.Generate(Prompt, 0, new Sampler());
        float[] logits = h.Session.Logits.ToArray();
        int promptLast = h.Tokenizer.Encode(Prompt, addBos: true)[^1];
        double PerSample(GrammarConstraint? g)
        {
            var s = new Sampler { Grammar = g };
            const int reps = 2000;
            var w = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++)
            {
                g?.Reset(promptLast);
                s.Sample(logits);
            }

            return w.Elapsed.TotalMilliseconds * 1000 / reps;
        }

        PerSample(null);
        double none = PerSample(null);
        double checkOnly = PerSample(new GrammarConstraint(GbnfGrammar.Parse("root ::= [^\\x00]*"), h.Tokenizer));
        double masked = PerSample(new GrammarConstraint(GbnfGrammar.Parse("root ::= (\"yes\" | \"no\")"), h.Tokenizer));
        output.WriteLine($"greedy sample per token: {none:F1} us without a grammar, {checkOnly:F1} us with the token checked, {masked:F1} us with a full mask and a second draw");
        output.WriteLine($"stories3M-q80 (vocab {h.Tokenizer.VocabSize}): full mask {maskMs:F3} ms (JSON-like grammar at its start), {permissiveMs:F3} ms (everything allowed)");
        output.WriteLine($"plain greedy: {plain.Tokens.Count} tokens, {plain.DecodeSeconds / Math.Max(plain.DecodeSteps, 1) * 1000:F3} ms per decode step");
        output.WriteLine($"constrained greedy: {constrained.Tokens.Count} tokens '{constrained.Text}', {sampler.Grammar!.MaskCount} full masks, {constrained.DecodeSeconds / Math.Max(constrained.DecodeSteps, 1) * 1000:F3} ms per decode step");
    }

    private sealed class Open : IDisposable
    {
        private readonly KvAdaQuant.Model.LlamaModel _model;
        private readonly Transformer _transformer;

        public Open(string model, string kv)
        {
            _model = ModelLoader.Load(model);
            _transformer = new Transformer(_model, 1);
            Session = new InferenceSession(_transformer, KvCacheFactory.Create(KvPlan.Parse(kv, _model.Config.Layers), _transformer.CacheLayout(512)));
            Generator = new Generator(Session, Tokenizer);
        }

        public ITokenizer Tokenizer => _model.Tokenizer!;

        public InferenceSession Session { get; }

        public Generator Generator { get; }

        public void Dispose()
        {
            Session.Dispose();
            _transformer.Dispose();
            _model.Dispose();
        }
    }

    // <unk>, BOS, EOS, then the given pieces.
    private sealed class TinyTokenizer(params string[] pieces) : ITokenizer
    {
        public int VocabSize => 3 + pieces.Length;

        public int BosToken => 1;

        public int EosToken => 2;

        public List<int> Encode(string text, bool addBos) => throw new NotSupportedException();

        public byte[] DecodeBytes(int previous, int token) => token < 3 ? [] : System.Text.Encoding.UTF8.GetBytes(pieces[token - 3]);
    }
}
