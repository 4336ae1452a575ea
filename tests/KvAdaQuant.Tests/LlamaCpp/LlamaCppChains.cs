using LLama.Native;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>What the comparisons with llama.cpp's native sampler chains share.</summary>
internal static class LlamaCppChains
{
    /// <summary>The whole model of <paramref name="gguf"/> on the CPU (grammar and DRY samplers read its vocabulary and training context).</summary>
    public static SafeLlamaModelHandle LoadModel(string gguf)
    {
        var p = new LLama.Common.ModelParams(gguf) { GpuLayerCount = 0 };
        LLama.Extensions.IModelParamsExtensions.ToLlamaModelParams(p, out var native);
        return SafeLlamaModelHandle.LoadFromFile(gguf, native);
    }

    /// <summary>The tokens the chain leaves a finite logit, from logits all 0, in id order.</summary>
    public static int[] Allowed(SafeLLamaSamplerChainHandle chain, int vocab)
    {
        var array = LLamaTokenDataArray.Create(new float[vocab]);
        using (LLamaTokenDataArrayNative.Create(array, out var native))
        {
            chain.Apply(ref native);
            return [.. native.Data.ToArray().Where(d => !float.IsNegativeInfinity(d.Logit)).Select(d => (int)d.ID).Order()];
        }
    }

    /// <summary>Whether the bytes end on a character boundary (the last lead byte's character has all its bytes).</summary>
    public static bool Utf8Whole(List<byte> bytes)
    {
        int i = bytes.Count - 1;
        while (i >= 0 && (bytes[i] & 0xC0) == 0x80)
        {
            i--;
        }

        if (i < 0)
        {
            return true;
        }

        int need = bytes[i] switch { < 0x80 => 1, >= 0xF0 => 4, >= 0xE0 => 3, _ => 2 };
        return bytes.Count - i >= need;
    }

    /// <summary>
    /// The vocabulary as the grammar comparisons read it (<c>GrammarLlamaCppTests</c>, <c>LazyGrammarLlamaCppTests</c>): each
    /// token's bytes, the control tokens (no text; not EOS), single-byte tokens, and which tokens are compared at all
    /// (control tokens, NUL and bytes that no UTF-8 holds are where llama.cpp differs on purpose).
    /// </summary>
    internal sealed class GrammarVocabulary
    {
        private readonly KvAdaQuant.Tokenization.ITokenizer _tok;

        public GrammarVocabulary(KvAdaQuant.Tokenization.ITokenizer tok, int vocab)
        {
            _tok = tok;
            Control = Enumerable.Range(0, vocab).Where(t => t != tok.EosToken && Bytes(t).Length == 0).ToHashSet();
            ByteOf = Enumerable.Range(0, vocab).Select(t => Bytes(t) is [byte b] ? b : -1).ToArray();
        }

        /// <summary>Control tokens: no text, EOS aside.</summary>
        public HashSet<int> Control { get; }

        /// <summary>The byte of a single-byte token, else -1.</summary>
        public int[] ByteOf { get; }

        public byte[] Bytes(int t) => _tok.DecodeBytes(-1, t);

        /// <summary>A token's text for messages, newlines escaped.</summary>
        public string Piece(int t) => System.Text.Encoding.UTF8.GetString(Bytes(t)).Replace("\n", "\\n", StringComparison.Ordinal);

        public bool Compared(int t) => !Control.Contains(t) && !(ByteOf[t] is 0 or >= 0xF5);

        /// <summary>
        /// One step of an active grammar: ours never allows a control token or a byte no UTF-8 holds, llama.cpp never NUL;
        /// tokens of whole characters are compared both ways while no character is half read (<paramref name="midCharacter"/>
        /// false), and byte tokens of a character's start or middle, and every token mid-character, only as ours within
        /// theirs. <paramref name="where"/> names the step in the failure.
        /// </summary>
        public void AssertSameAllowed(int[] theirsAll, int[] mineAll, bool midCharacter, Func<string> where)
        {
            Assert.DoesNotContain(mineAll, t => Control.Contains(t) || ByteOf[t] >= 0xF5); // never text, never UTF-8
            Assert.DoesNotContain(theirsAll, t => ByteOf[t] == 0);
            var theirs = theirsAll.Where(t => Compared(t) && !midCharacter && !(ByteOf[t] >= 0x80)).ToArray();
            var mine = mineAll.Where(t => Compared(t) && !midCharacter && !(ByteOf[t] >= 0x80)).ToArray();
            var beyond = mineAll.Where(Compared).Except(theirsAll).ToArray();
            if (!theirs.SequenceEqual(mine) || beyond.Length > 0)
            {
                var onlyTheirs = theirs.Except(mine).Take(8).Select(t => $"{t}'{Piece(t)}'");
                var onlyMine = mine.Except(theirs).Concat(beyond).Distinct().Take(8).Select(t => $"{t}'{Piece(t)}'");
                Assert.Fail($"{where()}: llama.cpp only {string.Join(", ", onlyTheirs)}; ours only {string.Join(", ", onlyMine)} ({theirs.Length} vs {mine.Length} allowed)");
            }
        }
    }
}
