using KvAdaQuant.Formats;
using KvAdaQuant.Grammar;
using KvAdaQuant.LlamaCpp;
using KvAdaQuant.Numerics;
using LLama.Native;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// Our grammar constraint against llama.cpp's own grammar sampler (LLamaSharp 0.30.0's native chain) over a whole
/// vocabulary: at every step of random walks through GBNF grammars (literals, character classes and their negations,
/// ranges, any-character, repetitions <c>* + ? {m,n}</c>, nested and recursive rules, multi-byte UTF-8 text that byte
/// tokens spell in pieces) and JSON-schema grammars, the set of tokens each allows next, EOS included, must be the same;
/// both then accept the same randomly chosen allowed token. Three kinds of token are left out of the comparison, where
/// kvaq differs from llama.cpp on purpose (and each side's rule is checked instead): control and unknown tokens, which
/// llama.cpp's grammar reads as their text (<c>&lt;s&gt;</c> may then be sampled as the text "&lt;s&gt;" inside a string,
/// though it prints as nothing) and kvaq never allows while a grammar is unfinished; the byte tokens 0xF5-0xFF, which are
/// never UTF-8 and which llama.cpp's decoder takes as the first byte of a 4-byte character; and the NUL byte, which a
/// class like <c>[^"]</c> takes and llama.cpp refuses (it reads pieces as C strings). And kvaq decodes UTF-8 strictly
/// where llama.cpp does not (an overlong form, a surrogate or a code point past U+10FFFF is no character; llama.cpp
/// takes any continuation byte and matches the value it adds up to), so byte tokens that start or continue a character
/// are checked one way only: every one kvaq allows, llama.cpp allows. (This comparison found kvaq allowing ED A0..ED BF,
/// which only surrogates start: a dead end; fixed.)
/// </summary>
public class GrammarLlamaCppTests(ConvertedModels converted) : IClassFixture<ConvertedModels>
{
    public static TheoryData<string, string> Grammars => new()
    {
        { "words", "root ::= (\"the\" | \"a\" | \"Lily\") (\" \" [a-z]+)* \".\"" },
        { "classes", "root ::= [A-Z] [a-z0-9_]{2,6} [^a-z\\n]? ([0-9] | [.,!?])+" },
        { "any", "root ::= \"<\" [^>]* \">\" . .?" },
        { "bounded", "root ::= (\"ab\" | \"b\"){1,3} \"c\"{0,2} [xyz]{3}" },
        { "recursive", "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"" },
        { "unicode", "root ::= (\"é\" | \"日本\" | \"😀\" | [α-ω])+ \" \"? [^\\x00-\\x7F]*" },
        { "escapes", "root ::= \"\\\"\" ([^\"\\\\] | \"\\\\\" [\"\\\\nt])* \"\\\"\" \"\\n\"?" },
        { "optional-end", "root ::= \"Once\" (\" upon\" (\" a\" \" time\"?)?)?" },
        { "json", JsonSchemaGrammar.FromSchema("""{"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 120}, "tags": {"type": "array", "items": {"enum": ["a", "bc"]}, "maxItems": 2}}, "required": ["name"]}""") },
        { "json-number", JsonSchemaGrammar.FromSchema("""{"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3}""") },
    };

    [LlamaCppTheory]
    [MemberData(nameof(Grammars))]
    public void The_tokens_allowed_at_every_step_are_llama_cpps(string name, string grammar)
    {
        LlamaCppRuntime.Load();
        string gguf = converted.Get("stories260K", GgmlType.F32);
        using var ours = ModelLoader.Load(gguf);
        var tok = ours.Tokenizer!;
        int vocab = ours.Config.VocabSize;
        using var model = LlamaCppChains.LoadModel(gguf);
        var parsed = GbnfGrammar.Parse(grammar);
        var rng = new Random(name.Aggregate(17, (h, ch) => (h * 31) + ch)); // the same walks every run (string.GetHashCode differs per process)
        var allowed = new bool[vocab];
        var v = new LlamaCppChains.GrammarVocabulary(tok, vocab);
        var byteOf = v.ByteOf;
        int steps = 0, ended = 0;
        for (int walk = 0; walk < 12; walk++)
        {
            using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            chain.AddGrammar(model, grammar, "root");
            var constraint = new GrammarConstraint(parsed, tok);
            constraint.Reset(previousToken: -1); // pieces as llama.cpp's grammar reads them: a leading space kept
            var path = new List<int>();
            var partial = new List<byte>(); // the bytes of a character not yet whole
            for (int step = 0; step < 40; step++, steps++)
            {
                var theirsAll = LlamaCppChains.Allowed(chain, vocab);
                constraint.ComputeAllowed(allowed);
                var mineAll = Enumerable.Range(0, vocab).Where(t => allowed[t]).ToArray();
                v.AssertSameAllowed(theirsAll, mineAll, partial.Count > 0, () => $"{name}, walk {walk}, step {step} after [{string.Join(" ", path.Select(t => $"'{v.Piece(t)}'"))}]");

                // Never a dead end: byte tokens spell any character, so whatever was accepted can go on or end.
                var choices = mineAll.Where(v.Compared).ToArray();
                Assert.True(choices.Length > 0, $"{name}, walk {walk}, step {step}: a dead end after [{string.Join(" ", path)}]");

                // Mostly a non-end token, so that walks go deep (a byte token a third of the time where there is one,
                // to walk through characters spelled in pieces); the end (EOS) when it is all that is left.
                var body = choices.Where(t => t != tok.EosToken).ToArray();
                var bytes = body.Where(t => byteOf[t] >= 0x80).ToArray();
                int next = bytes.Length > 0 && rng.Next(3) == 0 ? bytes[rng.Next(bytes.Length)]
                    : body.Length > 0 && rng.Next(8) > 0 ? body[rng.Next(body.Length)] : choices[rng.Next(choices.Length)];
                if (next == tok.EosToken)
                {
                    ended++;
                    break;
                }

                chain.Accept((LLamaToken)next);
                constraint.Accept(next);
                path.Add(next);
                partial.AddRange(tok.DecodeBytes(-1, next));
                if (LlamaCppChains.Utf8Whole(partial))
                {
                    partial.Clear();
                }
            }
        }

        Assert.True(steps >= 12 * 3, $"only {steps} steps compared");
        _ = ended;
    }
}
