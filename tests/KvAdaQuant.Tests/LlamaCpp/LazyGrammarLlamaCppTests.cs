using System.Runtime.InteropServices;
using System.Text;
using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using LLama.Native;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Our lazy grammar constraint (<see cref="GrammarTriggers"/>) against llama.cpp's lazy grammar sampler
/// (<c>llama_sampler_init_grammar_lazy_patterns</c> of LLamaSharp 0.30.0's native library, called directly: LLamaSharp's
/// <c>AddLazyGrammar</c> passes the patterns without their count and the process crashes) over the stories260K
/// vocabulary. Our trigger words are given to llama.cpp as the pattern <c>(w1|w2)</c> (searched for in the generated text;
/// the grammar reads from the group on), <see cref="GrammarTriggers.AtStart"/> as <c>^[ \t\n\r]*(w1|w2)</c>. Random walks
/// through seven cases (a Hermes-like GBNF call after <c>&lt;tool_call&gt;</c>, a JSON-schema call after
/// <c>{"name"</c>, the same with <c>{ "name"</c> too and at the start only, the single character <c>x</c>, two- and
/// three-byte characters (spelled by byte tokens too), words found inside tokens such as <c>" the"</c>, and a trigger
/// token with text beside a word): the free part is random text tokens and, a third of the time, a trigger word spelled
/// in random pieces (the first may carry text before the word, the last text after it, so the
/// trigger fires mid-token). At every step both agree whether the grammar is on; before the trigger llama.cpp allows every
/// token and we allow every one but those a separate oracle (over the whole free text) finds completing a trigger word, or
/// being a trigger token, with text the grammar refuses; from the trigger on the sets are compared as
/// <see cref="GrammarLlamaCppTests"/> compares a plain grammar. Found: kvaq started the grammar after a trigger token's
/// text, llama.cpp with it (fixed: the token's text is the start of the sentence, none for a control token). Left as
/// they are on purpose, each side's rule asserted in <see cref="Where_llama_cpp_differs_on_purpose_each_side_keeps_its_rule"/>:
/// a token that completes a trigger with text the grammar refuses is masked by kvaq, allowed by llama.cpp (which then
/// aborts the process, "Unexpected empty grammar stack after accepting piece", if it is sampled); a control token is text
/// to llama.cpp's trigger (<c>&lt;s&gt;</c> fires the word <c>&lt;</c>) and none to kvaq (so the walks' free text has no
/// control token); <see cref="GrammarTriggers.AtStart"/> holds for trigger tokens too, where llama.cpp's position rule is
/// its pattern's and its trigger tokens fire anywhere.
/// </summary>
public class LazyGrammarLlamaCppTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    public static TheoryData<string> Cases => new(LazyCases.All.Keys);

    [LlamaCppTheory]
    [MemberData(nameof(Cases))]
    public void The_tokens_allowed_before_and_after_the_trigger_are_llama_cpps(string name)
    {
        var c = LazyCases.All[name];
        LlamaCppRuntime.Load();
        string gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var tok = ours.Tokenizer!;
        int vocab = ours.Config.VocabSize;
        using var model = LlamaCppChains.LoadModel(gguf);
        var parsed = GbnfGrammar.Parse(c.Grammar);
        var triggers = new GrammarTriggers(c.Words, c.Tokens, c.AtStart);
        var rng = new Random(name.Aggregate(17, (h, ch) => (h * 31) + ch)); // the same walks every run (string.GetHashCode differs per process)
        var allowed = new bool[vocab];
        var v = new LlamaCppChains.GrammarVocabulary(tok, vocab);
        byte[] Bytes(int t) => v.Bytes(t);
        string Piece(int t) => v.Piece(t);
        // Free text: tokens of ASCII text (no control token, no NUL, no byte of a longer character).
        var text = Enumerable.Range(0, vocab).Where(t => Bytes(t).Length > 0 && Bytes(t).All(b => b is > 0 and < 0x80)).ToArray();
        var words = c.Words.Select(Encoding.UTF8.GetBytes).ToArray();
        int steps = 0, fired = 0, refused = 0, midToken = 0;
        for (int walk = 0; walk < 16; walk++)
        {
            using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            LazyNative.AddLazyGrammar(chain, model, c.Grammar, c.Pattern, c.Tokens);
            var constraint = new GrammarConstraint(parsed, tok, triggers);
            constraint.Reset(previousToken: -1); // pieces as llama.cpp's grammar reads them: a leading space kept
            var path = new List<int>();
            var free = new List<byte>(); // the text before the trigger
            var plan = new Queue<int>(); // tokens that spell a trigger word, in pieces
            var partial = new List<byte>(); // after the trigger: the bytes of a character not yet whole
            for (int step = 0; step < 40; step++, steps++)
            {
                var theirsAll = LlamaCppChains.Allowed(chain, vocab);
                constraint.ComputeAllowed(allowed);
                var mineAll = Enumerable.Range(0, vocab).Where(t => allowed[t]).ToArray();
                string Where() => $"{name}, walk {walk}, step {step} after [{string.Join(" ", path.Select(t => $"'{Piece(t)}'"))}]";
                Assert.True(constraint.IsActive == theirsAll.Length < vocab, $"{Where()}: ours active {constraint.IsActive}, llama.cpp allows {theirsAll.Length} of {vocab}");
                int next;
                if (!constraint.IsActive)
                {
                    // Before the trigger llama.cpp allows every token; we allow every one but a token that completes a
                    // trigger word with text the grammar refuses (llama.cpp would take it and then fail on it).
                    var refusedHere = Enumerable.Range(0, vocab).Where(t => RefusedCompletion(free, Bytes(t), t)).ToArray();
                    Assert.Equal(Enumerable.Range(0, vocab).Except(refusedHere), mineAll);
                    refused += refusedHere.Length > 0 ? 1 : 0;
                    if (plan.Count == 0 && rng.Next(c.AtStart && free.All(IsSpace) ? 2 : 3) == 0)
                    {
                        foreach (int t in Spell(words.Length > 0 && (c.Tokens.Length == 0 || rng.Next(2) == 0) ? words[rng.Next(words.Length)] : Bytes(c.Tokens[rng.Next(c.Tokens.Length)]), rng, tok, vocab))
                        {
                            plan.Enqueue(t);
                        }
                    }

                    // Never a token we mask: llama.cpp would fail on it (see below).
                    next = plan.Count > 0 && allowed[plan.Peek()] ? plan.Dequeue()
                        : c.AtStart && rng.Next(2) == 0 ? Spaces[rng.Next(Spaces.Length)]
                        : text.Where(t => allowed[t]).ElementAt(rng.Next(text.Count(t => allowed[t])));
                    if (plan.Count > 0 && !allowed[plan.Peek()])
                    {
                        plan.Clear();
                    }

                    chain.Accept((LLamaToken)next);
                    constraint.Accept(next);
                    path.Add(next);
                    if (constraint.IsActive)
                    {
                        fired++;
                        var bytes = Bytes(next);
                        midToken += words.Any(w => bytes.AsSpan().IndexOf(w) > 0 || (bytes.AsSpan().IndexOf(w) == 0 && bytes.Length > w.Length)) ? 1 : 0;
                        partial.AddRange(bytes);
                        if (LlamaCppChains.Utf8Whole(partial))
                        {
                            partial.Clear();
                        }
                    }
                    else
                    {
                        free.AddRange(Bytes(next));
                    }

                    continue;
                }

                // From the trigger on: as GrammarLlamaCppTests compares a plain grammar.
                v.AssertSameAllowed(theirsAll, mineAll, partial.Count > 0, Where);

                var choices = mineAll.Where(v.Compared).ToArray();
                Assert.True(choices.Length > 0, $"{Where()}: a dead end");
                var body = choices.Where(t => t != tok.EosToken).ToArray();
                next = body.Length > 0 && rng.Next(8) > 0 ? body[rng.Next(body.Length)] : choices[rng.Next(choices.Length)];
                if (next == tok.EosToken)
                {
                    break;
                }

                chain.Accept((LLamaToken)next);
                constraint.Accept(next);
                path.Add(next);
                partial.AddRange(Bytes(next));
                if (LlamaCppChains.Utf8Whole(partial))
                {
                    partial.Clear();
                }
            }
        }

        Assert.True(steps >= 16 * 10, $"only {steps} steps compared");
        Assert.True(fired >= 6, $"the trigger fired in only {fired} of 16 walks");
        Assert.True(!c.Tricky || (refused > 0 && midToken > 0), $"{name}: refused completions at {refused} steps, mid-token triggers {midToken}");

        // Whether a token is masked before the trigger: a trigger token (where it counts) whose text the grammar refuses,
        // or a token that completes a trigger word that counts where the grammar refuses the text from the word's first
        // byte through the token's end (found in the whole free text, not kvaq's tail).
        bool RefusedCompletion(List<byte> freeText, byte[] piece, int token)
        {
            if (c.Tokens.Contains(token) && (!c.AtStart || freeText.All(IsSpace)))
            {
                var m = new GrammarMatcher(parsed);
                return !m.CanAccept(piece);
            }

            byte[] all = [.. freeText, .. piece];
            int start = -1;
            foreach (var w in words)
            {
                int i = all.AsSpan().IndexOf(w);
                if (i >= 0 && (start < 0 || i < start))
                {
                    start = i;
                }
            }

            if (start < 0)
            {
                return false;
            }

            if (c.AtStart && !all.Take(start).All(IsSpace))
            {
                return false;
            }

            return !new GrammarMatcher(parsed).CanAccept(all.AsSpan(start));
        }
    }

    [LlamaCppFact]
    public void Where_llama_cpp_differs_on_purpose_each_side_keeps_its_rule()
    {
        LlamaCppRuntime.Load();
        string gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var tok = ours.Tokenizer!;
        int vocab = ours.Config.VocabSize;
        using var model = LlamaCppChains.LoadModel(gguf);
        int x = 123, lily = 317, bos = tok.BosToken;
        Assert.Equal("x", Encoding.UTF8.GetString(tok.DecodeBytes(-1, x)));
        Assert.Equal(" Lily", Encoding.UTF8.GetString(tok.DecodeBytes(-1, lily)));

        // A control token is text to llama.cpp's trigger ("<s>" fires the word "<" and the grammar reads "<s>"); to kvaq it
        // has none, so it fires no word (and a grammar never reads it).
        const string angle = "root ::= \"<\" [a-z/>]+";
        (bool Theirs, bool Mine) After(string grammar, LazyCase c, params int[] tokens)
        {
            using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            LazyNative.AddLazyGrammar(chain, model, grammar, c.Pattern, c.Tokens);
            var constraint = new GrammarConstraint(GbnfGrammar.Parse(grammar), tok, new GrammarTriggers(c.Words, c.Tokens, c.AtStart));
            constraint.Reset(previousToken: -1);
            foreach (int t in tokens)
            {
                Assert.True(constraint.IsAllowed(t));
                chain.Accept((LLamaToken)t);
                constraint.Accept(t);
            }

            return (LlamaCppChains.Allowed(chain, vocab).Length < vocab, constraint.IsActive);
        }

        Assert.Equal((true, false), After(angle, new LazyCase(angle, ["<"], [], false), x, bos));
        Assert.Equal((true, true), After(angle, new LazyCase(angle, ["<"], [], false), x, 504)); // the text "<": both

        // AtStart: kvaq's rule covers trigger tokens too; llama.cpp's position rule is its pattern's, and trigger tokens
        // have none: " Lily" after "x" fires llama.cpp's grammar, not kvaq's.
        const string name = "root ::= \" Lily\" \" \" [a-z]+";
        Assert.Equal((true, false), After(name, new LazyCase(name, ["Tim"], [lily], true), x, lily));
        Assert.Equal((true, true), After(name, new LazyCase(name, ["Tim"], [lily], true), 35, lily)); // after a space: both

        // A token that completes the word with text the grammar refuses: llama.cpp allows it (and fails once it is
        // sampled: "Unexpected empty grammar stack"), kvaq masks it. (The walks check this at every free step.)
        var refuse = new LazyCase(name, ["Tim"], [], false);
        using var c2 = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
        LazyNative.AddLazyGrammar(c2, model, name, refuse.Pattern, refuse.Tokens);
        var lazy = new GrammarConstraint(GbnfGrammar.Parse(name), tok, new GrammarTriggers(refuse.Words, [], false));
        lazy.Reset(previousToken: -1);
        int tim = Enumerable.Range(0, vocab).Single(t => Encoding.UTF8.GetString(tok.DecodeBytes(-1, t)) == " Tim");
        Assert.Contains(tim, LlamaCppChains.Allowed(c2, vocab));
        Assert.False(lazy.IsAllowed(tim));
    }

    private static readonly int[] Spaces = [35, 12, 13];

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r';

    // Tokens whose pieces spell the word, each a random one of those that fit, so the word splits at different points;
    // the first may carry text before the word and the last text after it (the trigger then fires mid-token).
    private static List<int> Spell(byte[] word, Random rng, KvAdaQuant.Tokenization.ITokenizer tok, int vocab)
    {
        var pieces = Enumerable.Range(3, vocab - 3).Select(t => (Token: t, Bytes: tok.DecodeBytes(-1, t))).Where(x => x.Bytes.Length > 0).ToArray();
        var spelled = new List<int>();
        int at = 0;
        var lead = pieces.Select(x => (x.Token, K: Enumerable.Range(1, Math.Min(word.Length, x.Bytes.Length - 1)).LastOrDefault(k => x.Bytes.AsSpan().EndsWith(word.AsSpan(0, k)))))
            .Where(x => x.K > 0).ToArray();
        if (lead.Length > 0 && rng.Next(2) == 0)
        {
            var (t, k) = lead[rng.Next(lead.Length)];
            spelled.Add(t);
            at = k;
        }

        while (at < word.Length)
        {
            var rest = word.AsSpan(at).ToArray();
            var fits = pieces.Where(x => rest.AsSpan().StartsWith(x.Bytes) || x.Bytes.AsSpan().StartsWith(rest)).ToArray();
            var (t, bytes) = fits[rng.Next(fits.Length)];
            spelled.Add(t);
            at += bytes.Length;
        }

        return spelled;
    }

    // One comparison: a grammar, kvaq's triggers, and llama.cpp's trigger pattern for the same words.
    private sealed record LazyCase(string Grammar, string[] Words, int[] Tokens, bool AtStart, bool Tricky = false)
    {
        // llama.cpp searches the generated text for the pattern and feeds the grammar from its first group on; kvaq's
        // AtStart is the pattern anchored at the start after spaces, tabs and line breaks.
        public string Pattern => (AtStart ? "^[ \\t\\n\\r]*(" : "(") + string.Join("|", Words.Select(Escape)) + ")";

        private static string Escape(string word) => string.Concat(word.Select(ch => ".^$|()*+?[]{}\\".Contains(ch, StringComparison.Ordinal) ? "\\" + ch : ch.ToString()));
    }

    private static class LazyCases
    {
        private const string Hermes = "root ::= \"<tool_call>\\n{\\\"name\\\": \\\"\" [a-z_]{1,8} \"\\\", \\\"arguments\\\": {\" ( \"\\\"\" [a-z]+ \"\\\": \" [0-9]+ )? \"}}\\n</tool_call>\"";

        private static readonly string Call = JsonSchemaGrammar.FromSchema("""{"type": "object", "properties": {"name": {"enum": ["get_weather", "set"]}, "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 5}}}}, "required": ["name", "arguments"]}""");

        public static Dictionary<string, LazyCase> All { get; } = new()
        {
            ["hermes"] = new(Hermes, ["<tool_call>"], [], false),
            ["json-name"] = new(Call, ["{\"name\""], [], false),
            ["json-at-start"] = new(Call, ["{\"name\"", "{ \"name\""], [], true),
            ["single-character"] = new("root ::= \"x\" [0-9]+ (\",\" [0-9]+)* \".\"", ["x"], [], false),
            ["mid-token"] = new("root ::= \"he\" [a-z ]{0,12} \".\"", ["he", "Tim"], [], false, Tricky: true),
            ["unicode"] = new("root ::= \"é\" [a-zé日]{1,5} \".\"", ["é", "日本"], [], false),
            ["token"] = new("root ::= (\" Lily\" | \"Tim\") (\" \" [a-z]+){1,3} \".\"", ["Tim"], [317], false, Tricky: true),
        };
    }

    // llama_sampler_init_grammar_lazy_patterns called directly: LLamaSharp 0.30.0's AddLazyGrammar passes the patterns
    // without their count (the arguments after it shift, and the process crashes).
    private static class LazyNative
    {
        private static readonly Lazy<(GetVocab Vocab, InitLazy Init, ChainAdd Add)> Functions = new(() =>
        {
            var lib = NativeLibrary.Load(LlamaCppRuntime.Load().LibraryPath);
            return (Marshal.GetDelegateForFunctionPointer<GetVocab>(NativeLibrary.GetExport(lib, "llama_model_get_vocab")),
                Marshal.GetDelegateForFunctionPointer<InitLazy>(NativeLibrary.GetExport(lib, "llama_sampler_init_grammar_lazy_patterns")),
                Marshal.GetDelegateForFunctionPointer<ChainAdd>(NativeLibrary.GetExport(lib, "llama_sampler_chain_add")));
        });

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate IntPtr GetVocab(IntPtr model);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate IntPtr InitLazy(IntPtr vocab, IntPtr grammar, IntPtr root, IntPtr[] patterns, nuint patternCount, int[] tokens, nuint tokenCount);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate void ChainAdd(IntPtr chain, IntPtr sampler);

        public static void AddLazyGrammar(SafeLLamaSamplerChainHandle chain, SafeLlamaModelHandle model, string grammar, string pattern, int[] tokens)
        {
            var f = Functions.Value;
            IntPtr g = Marshal.StringToCoTaskMemUTF8(grammar), root = Marshal.StringToCoTaskMemUTF8("root"), p = Marshal.StringToCoTaskMemUTF8(pattern);
            try
            {
                IntPtr sampler = f.Init(f.Vocab(model.DangerousGetHandle()), g, root, [p], 1, tokens.Length > 0 ? tokens : [-1], (nuint)tokens.Length);
                Assert.NotEqual(IntPtr.Zero, sampler);
                f.Add(chain.DangerousGetHandle(), sampler);
            }
            finally
            {
                Marshal.FreeCoTaskMem(g);
                Marshal.FreeCoTaskMem(root);
                Marshal.FreeCoTaskMem(p);
            }
        }
    }
}
