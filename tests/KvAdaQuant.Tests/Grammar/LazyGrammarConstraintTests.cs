using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// A lazy <see cref="GrammarConstraint"/> (<see cref="GrammarTriggers"/>) over stories3M's real tokenizer and model and over
/// a hand-made tokenizer for the token boundaries: the text before a trigger is never masked; from the trigger (even one
/// that spans tokens) only tokens the grammar accepts are allowed, checked against a separate matcher; a token that
/// completes a trigger with text the grammar refuses is masked; generation gives free text, then a well-formed call.
/// </summary>
public class LazyGrammarConstraintTests
{
    private const string Call = "root ::= \"<tool_call>\\n{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": {\\\"city\\\": \\\"\" [a-z]{1,8} \"\\\"}}\\n</tool_call>\"";

    private static readonly GbnfGrammar CallGrammar = GbnfGrammar.Parse(Call);

    private static readonly GrammarTriggers ToolCall = new(["<tool_call>"], []);

    private static readonly Lazy<ITokenizer> Stories3M = new(() => Llama2cTokenizer.Load(Fixtures.Stories3MTokenizer, 4096));

    [Fact]
    public void Text_before_the_trigger_is_not_masked_and_the_grammar_constrains_from_the_trigger_on()
    {
        var tok = Stories3M.Value;
        var lazy = new GrammarConstraint(CallGrammar, tok, ToolCall);
        lazy.Reset(tok.BosToken);
        var tokens = tok.Encode("Once upon a time, Lily said: <tool_call>", addBos: false);
        var allowed = new bool[tok.VocabSize];
        int trigger = -1;
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.False(lazy.IsActive);
            Assert.True(lazy.IsComplete); // free text may end here
            Assert.Equal(tok.VocabSize, lazy.ComputeAllowed(allowed)); // every token, EOS included
            Assert.True(lazy.IsAllowed(tokens[i]));
            lazy.Accept(tokens[i]);
            if (lazy.IsActive && trigger < 0)
            {
                trigger = i;
            }
        }

        Assert.True(tok.Encode("<tool_call>", addBos: false).Count > 1, "the trigger word spans several tokens here");
        Assert.Equal(tokens.Count - 1, trigger); // woken by the token that completes the word, not before
        Assert.Equal(trigger, lazy.TriggeredAfter);

        // Now only what the grammar accepts after "<tool_call>": checked token by token against a matcher of its own.
        var oracle = new GrammarMatcher(CallGrammar);
        Assert.True(oracle.TryAccept("<tool_call>"));
        int count = lazy.ComputeAllowed(allowed);
        Assert.InRange(count, 1, 10);
        for (int t = 0; t < tok.VocabSize; t++)
        {
            byte[] bytes = tok.DecodeBytes(tokens[^1], t);
            Assert.Equal(bytes.Length > 0 && oracle.CanAccept(bytes), allowed[t]);
        }

        Assert.False(allowed[tok.EosToken]);
        Assert.False(lazy.IsComplete);
        Assert.All(Enumerable.Range(0, tok.VocabSize).Where(t => allowed[t]), t => Assert.Equal((byte)'\n', tok.DecodeBytes(tokens[^1], t)[0]));
    }

    [Fact]
    public void Without_a_trigger_the_constraint_changes_nothing_and_ends_anywhere()
    {
        var tok = Stories3M.Value;
        var lazy = new GrammarConstraint(CallGrammar, tok, ToolCall);
        lazy.Reset(tok.BosToken);
        foreach (int t in tok.Encode("Once upon a time <tool there was a tool_call> and <tool_cal", addBos: false))
        {
            Assert.True(lazy.IsAllowed(t));
            lazy.Accept(t);
        }

        Assert.False(lazy.IsActive);
        Assert.True(lazy.IsAllowed(tok.EosToken));
        lazy.Accept(tok.EosToken);
        Assert.True(lazy.IsEnded);

        // The same constraint, reset: the trigger state starts over.
        lazy.Reset(tok.BosToken);
        Assert.False(lazy.IsActive);
        Assert.Equal(-1, lazy.TriggeredAfter);
    }

    [Fact]
    public void A_token_that_completes_the_trigger_with_text_the_grammar_refuses_is_masked()
    {
        // <unk>, BOS, EOS, then: 3 "<tool", 4 "_call>", 5 "_call>\n", 6 "_call> x", 7 "Hi ", 8 "<tool_call>\n{", 9 "<tool_call>{".
        var tok = new PieceTokenizer("<tool", "_call>", "_call>\n", "_call> x", "Hi ", "<tool_call>\n{", "<tool_call>{");
        var lazy = new GrammarConstraint(CallGrammar, tok, ToolCall);
        lazy.Reset();
        var allowed = new bool[tok.VocabSize];
        Assert.True(lazy.IsAllowed(8)); // the word and then what the grammar wants, in one token
        Assert.False(lazy.IsAllowed(9)); // the word, then "{" where the grammar wants "\n"
        Assert.Equal(tok.VocabSize - 1, lazy.ComputeAllowed(allowed));
        Assert.False(allowed[9]);

        lazy.Accept(7);
        lazy.Accept(3); // "Hi <tool": a prefix of the word, still free
        Assert.False(lazy.IsActive);
        Assert.True(lazy.IsAllowed(4));
        Assert.True(lazy.IsAllowed(5));
        Assert.False(lazy.IsAllowed(6)); // "_call> x": completes the word with a space the grammar refuses
        Assert.True(lazy.IsAllowed(tok.EosToken));
        Assert.Equal(tok.VocabSize - 2, lazy.ComputeAllowed(allowed));
        Assert.False(allowed[6]);
        Assert.False(allowed[9]); // "<tool" + "<tool_call>{": the word again, with "{"
        Assert.True(allowed[8]);
        Assert.Throws<InvalidOperationException>(() => lazy.Accept(6));
        Assert.False(lazy.IsActive); // a refused token changes nothing

        lazy.Accept(5); // "_call>\n": the word from its start ("<tool" in the token before) and the line break
        Assert.True(lazy.IsActive);
        Assert.Equal(2, lazy.TriggeredAfter);
        Assert.False(lazy.IsAllowed(tok.EosToken));
        Assert.False(lazy.IsAllowed(7));
    }

    [Fact]
    public void At_start_triggers_count_only_after_whitespace_and_a_trigger_token_starts_the_grammar_after_it()
    {
        // 3 " ", 4 "{\"name\"", 5 "x", 6 a control token (no text), 7 ": \"get_weather\"".
        var tok = new PieceTokenizer(" ", "{\"name\"", "x", string.Empty, ": \"get_weather\"");
        var grammar = GbnfGrammar.Parse("root ::= \"{\\\"name\\\": \\\"get_weather\\\"}\"");
        var triggers = new GrammarTriggers(["{\"name\""], [6], AtStart: true);

        var lazy = new GrammarConstraint(grammar, tok, triggers);
        lazy.Reset();
        lazy.Accept(3);
        lazy.Accept(4);
        Assert.True(lazy.IsActive); // whitespace before the word
        Assert.True(lazy.IsAllowed(7));
        Assert.False(lazy.IsAllowed(5));

        lazy.Reset();
        lazy.Accept(5);
        lazy.Accept(4);
        Assert.False(lazy.IsActive); // "x" before it: not at the start, free text
        lazy.Accept(6);
        Assert.False(lazy.IsActive); // the trigger token too counts only at the start

        lazy.Reset();
        lazy.Accept(6);
        Assert.True(lazy.IsActive);
        Assert.True(lazy.IsAllowed(4)); // the grammar starts after the token
        Assert.False(lazy.IsAllowed(3));
    }

    [Fact]
    public void A_trigger_token_with_text_starts_the_grammar_with_its_text()
    {
        // As llama.cpp's lazy grammar reads a trigger token (found by LazyGrammarLlamaCppTests: kvaq started the grammar
        // after the token's text, llama.cpp with it). 3 "Call", 4 " me", 5 "x", 6 a control token (no text).
        var tok = new PieceTokenizer("Call", " me", "x", string.Empty);
        var grammar = GbnfGrammar.Parse("root ::= \"Call me\"");
        var lazy = new GrammarConstraint(grammar, tok, new GrammarTriggers([], [3, 5, 6]));
        lazy.Reset();
        var allowed = new bool[tok.VocabSize];
        Assert.True(lazy.IsAllowed(3));
        Assert.False(lazy.IsAllowed(5)); // its text "x" is refused by the grammar: masked, as a word completed with refused text
        Assert.True(lazy.IsAllowed(6)); // no text: the grammar starts after it
        Assert.Equal(tok.VocabSize - 1, lazy.ComputeAllowed(allowed));
        Assert.False(allowed[5]);
        Assert.Throws<InvalidOperationException>(() => lazy.Accept(5));
        Assert.False(lazy.IsActive);

        lazy.Accept(3);
        Assert.True(lazy.IsActive);
        Assert.True(lazy.IsAllowed(4)); // the grammar has read "Call"
        Assert.False(lazy.IsAllowed(3));
        lazy.Accept(4);
        Assert.True(lazy.IsComplete);

        lazy.Reset();
        lazy.Accept(6);
        Assert.True(lazy.IsActive);
        Assert.True(lazy.IsAllowed(3));
        Assert.False(lazy.IsAllowed(4));
    }

    [Fact]
    public void Bad_triggers_are_refused_with_a_reason()
    {
        var tok = new PieceTokenizer("a");
        Assert.Contains("at least one", Assert.Throws<ArgumentException>(() => new GrammarConstraint(CallGrammar, tok, new GrammarTriggers([], []))).Message, StringComparison.Ordinal);
        Assert.Contains("must not be empty", Assert.Throws<ArgumentException>(() => new GrammarConstraint(CallGrammar, tok, new GrammarTriggers([""], []))).Message, StringComparison.Ordinal);
        Assert.Contains("-2", Assert.Throws<ArgumentException>(() => new GrammarConstraint(CallGrammar, tok, new GrammarTriggers([], [-2]))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Greedy_generation_is_free_until_the_trigger_then_a_well_formed_call()
    {
        using var model = ModelLoader.Load(Fixtures.Stories3M);
        using var transformer = new Transformer(model, 1);
        using var session = new InferenceSession(transformer, KvCacheFactory.Create(KvPlan.Parse("fp32", model.Config.Layers), transformer.CacheLayout(512)));
        var generator = new Generator(session, model.Tokenizer!);
        const string prompt = "Once upon a time, there was a little";
        var plain = generator.Generate(prompt, 40, new Sampler());
        int named = plain.Text.IndexOf(" named", StringComparison.Ordinal);
        Assert.True(named > 0, plain.Text); // the story names her: the trigger comes up by itself

        // The grammar: the word " named", then a Hermes call of get_weather.
        var grammar = GbnfGrammar.Parse(Call.Replace("root ::= \"<tool_call>", "root ::= \" named <tool_call>", StringComparison.Ordinal));
        var lazy = new GrammarConstraint(grammar, model.Tokenizer!, new GrammarTriggers([" named"], []));
        var result = generator.Generate(prompt, 300, new Sampler { Grammar = lazy });
        Assert.Equal("eos", result.StopReason);
        Assert.True(lazy.IsActive);
        Assert.Equal(plain.Tokens.Take(lazy.TriggeredAfter + 1), result.Tokens.Take(lazy.TriggeredAfter + 1)); // free text as without a grammar
        Assert.StartsWith(plain.Text[..(named + " named".Length)], result.Text, StringComparison.Ordinal);
        Assert.True(grammar.Matches(result.Text[named..]), result.Text);

        var reply = ChatToolFormat.Hermes.Parse(result.Text, [new ChatTool("get_weather", null, """{"type": "object", "properties": {"city": {"type": "string"}}}""")]);
        var call = Assert.Single(reply.ToolCalls);
        Assert.Equal("get_weather", call.Name);
        Assert.Matches("^\\{\"city\":\"[a-z]{1,8}\"\\}$", call.Arguments);
        Assert.Equal((plain.Text[..named] + " named").Trim(), reply.Content);
    }

    // <unk>, BOS, EOS, then the given pieces (an empty piece: a control token without text).
    private sealed class PieceTokenizer(params string[] pieces) : ITokenizer
    {
        public int VocabSize => 3 + pieces.Length;

        public int BosToken => 1;

        public int EosToken => 2;

        public List<int> Encode(string text, bool addBos) => throw new NotSupportedException();

        public byte[] DecodeBytes(int previous, int token) => token < 3 ? [] : Encoding.UTF8.GetBytes(pieces[token - 3]);
    }
}
