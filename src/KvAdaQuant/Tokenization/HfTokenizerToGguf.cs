using System.Text.Json;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Carries a Hugging Face <c>tokenizer.json</c> (BPE) into GGUF <c>tokenizer.ggml.*</c> metadata that llama.cpp and
/// <see cref="GgufTokenizerFactory"/> read back as the same tokenizer, or refuses with the reason:
/// <list type="bullet">
/// <item>byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) becomes <c>tokenizer.ggml.model = gpt2</c> with the merges as
/// they are and <c>tokenizer.ggml.pre</c> named by matching the pre-tokenizer's regexes (and <c>ignore_merges</c>)
/// against the schemes both engines know: <c>gpt-2</c>, <c>llama-bpe</c>, <c>qwen2</c>, <c>smollm</c>, <c>default</c>
/// (llama.cpp's convert_hf_to_gguf picks the name by hashing a sample tokenization instead);</item>
/// <item>SentencePiece-style BPE (Llama 2: spaces as U+2581, byte fallback) becomes <c>tokenizer.ggml.model = llama</c>,
/// whose tokenizer merges the adjacent pair whose concatenation has the highest score. Scores are derived from the merge
/// ranks (a token's score is minus the rank of its first merge), which gives the same merges as BPE by rank exactly when
/// every split of every token into two tokens is a merge and each token's merges have consecutive ranks (true of
/// tokenizer.json files converted from SentencePiece, as HF's LlamaConverter writes them); both are checked.</item>
/// </list>
/// Token ids past the tokenizer's last one up to the model's vocabulary are padded with <c>[PAD{id}]</c> tokens of type
/// UNUSED, as llama.cpp's converter does. Types: <c>special</c> added tokens CONTROL, other added tokens USER_DEFINED,
/// <c>&lt;0xXX&gt;</c> with byte fallback BYTE, the unknown token UNKNOWN.
/// </summary>
public static class HfTokenizerToGguf
{
    private const char Escape = '\u2581';

    /// <summary>
    /// GGUF metadata for <paramref name="tokenizerJsonPath"/>, for a model of <paramref name="vocabSize"/> tokens with BOS
    /// <paramref name="bos"/> and EOS <paramref name="eos"/> (from config.json). <c>add_bos_token</c> comes from
    /// <c>tokenizer_config.json</c> beside it when that says, else from whether the post-processor puts BOS first;
    /// <c>chat_template</c> from <c>tokenizer_config.json</c>.
    /// </summary>
    public static GgufTokenizerMetadata Convert(string tokenizerJsonPath, int vocabSize, int bos, int eos)
    {
        var tok = HfTokenizerJson.Load(tokenizerJsonPath, bos, eos);
        if (tok.VocabSize > vocabSize)
        {
            throw new ModelFormatException(tokenizerJsonPath, $"tokenizer has {tok.VocabSize} tokens but the model's vocabulary is {vocabSize}: tokenizer and model vocabularies disagree");
        }

        var (addBos, chatTemplate) = ReadSettings(tokenizerJsonPath, tok);
        var o = tok.Options;
        int n = vocabSize;
        var tokens = new string[n];
        var types = new int[n];
        for (int i = 0; i < n; i++)
        {
            if (i < tok.VocabSize)
            {
                tokens[i] = tok.TokenText(i);
                types[i] = (int)tok.TypeOf(i);
            }
            else
            {
                tokens[i] = $"[PAD{i}]";
                types[i] = (int)TokenType.Unused;
            }
        }

        var m = new GgufTokenizerMetadata(tokenizerJsonPath);
        if (o.ByteLevel)
        {
            m.Set("tokenizer.ggml.model", "gpt2");
            m.Set("tokenizer.ggml.pre", PreName(tokenizerJsonPath, tok));
            m.Set("tokenizer.ggml.tokens", tokens);
            m.Set("tokenizer.ggml.token_type", types);
            m.Set("tokenizer.ggml.merges", tok.Merges.ToArray());
        }
        else if (o.EscapeSpaces)
        {
            CheckSentencePieceStyle(tokenizerJsonPath, tok);
            m.Set("tokenizer.ggml.model", "llama");
            m.Set("tokenizer.ggml.tokens", tokens);
            m.Set("tokenizer.ggml.scores", ScoresFromMerges(tokenizerJsonPath, tok, n));
            m.Set("tokenizer.ggml.token_type", types);
            if (o.SpacePrefix == SpacePrefixScheme.Never)
            {
                m.Set("tokenizer.ggml.add_space_prefix", false);
            }
        }
        else
        {
            throw new ModelFormatException(tokenizerJsonPath, "this BPE tokenizer is neither byte-level nor SentencePiece style (no ByteLevel pre-tokenizer or decoder, no '\u2581' space replacement): GGUF has no tokenizer model that reproduces it, so it cannot be carried");
        }

        if (o.Unknown >= 0)
        {
            m.Set("tokenizer.ggml.unknown_token_id", (uint)o.Unknown);
        }

        if (bos >= 0)
        {
            m.Set("tokenizer.ggml.bos_token_id", (uint)bos);
        }

        if (eos >= 0)
        {
            m.Set("tokenizer.ggml.eos_token_id", (uint)eos);
        }

        m.Set("tokenizer.ggml.add_bos_token", addBos);
        m.Set("tokenizer.ggml.add_eos_token", false);
        if (chatTemplate is not null)
        {
            m.Set("tokenizer.chat_template", chatTemplate);
        }

        return m;
    }

    /// <summary>Names the GGUF pre-tokenizer whose regexes and <c>ignore_merges</c> equal the tokenizer's, or throws.</summary>
    private static string PreName(string path, MergesBpeTokenizer tok)
    {
        var o = tok.Options;
        if (o.SpacePrefix != SpacePrefixScheme.Never)
        {
            throw new ModelFormatException(path, "byte-level pre-tokenizer with add_prefix_space: GGUF's gpt2 tokenizer has no such option, so it cannot be carried");
        }

        var patterns = (o.PreTokenizer?.Patterns ?? []).Select(Canonical).ToArray();
        foreach (var name in new[] { "gpt-2", "llama-bpe", "qwen2", "smollm", "default" })
        {
            var (pre, ignoreMerges) = BpePreTokenizer.ForGgufPre(name)!.Value;
            if (ignoreMerges == o.IgnoreMerges && pre.Patterns.Select(Canonical).SequenceEqual(patterns))
            {
                return name;
            }
        }

        throw new ModelFormatException(path, $"byte-level pre-tokenizer [{string.Join(" | then | ", o.PreTokenizer?.Patterns ?? [])}] (ignore_merges {o.IgnoreMerges.ToString().ToLowerInvariant()}) matches none of the GGUF pre-tokenizers kvaq and llama.cpp share (gpt-2, llama-bpe, qwen2, smollm, default), so it cannot be carried");
    }

    /// <summary>
    /// One spelling per regex: Hugging Face's files write the contractions case-insensitively and end GPT-2's pattern in
    /// <c>|\s+</c>; llama.cpp spells the cases out and keeps the unmatched gaps instead (the same words either way).
    /// </summary>
    private static string Canonical(string pattern)
    {
        const string hfContractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
        const string spelledContractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
        var p = pattern.Replace(hfContractions, spelledContractions, StringComparison.Ordinal);
        return p == HfTokenizerJson.ByteLevelPattern ? BpePreTokenizer.Gpt2Pattern : p;
    }

    private static void CheckSentencePieceStyle(string path, MergesBpeTokenizer tok)
    {
        var o = tok.Options;
        if (!o.ByteFallback)
        {
            throw new ModelFormatException(path, "SentencePiece-style BPE without byte_fallback: GGUF's llama tokenizer always falls back to <0xXX> byte tokens, so unknown characters would encode differently; cannot be carried");
        }

        if (o.IgnoreMerges)
        {
            throw new ModelFormatException(path, "SentencePiece-style BPE with ignore_merges: GGUF's llama tokenizer has no such option; cannot be carried");
        }

        if (o.PreTokenizer is { } pre)
        {
            // Only Metaspace's split at '▁' can be here, and it changes nothing unless a token holds a '▁' after its first character.
            if (pre.Patterns.Count != 1 || pre.Patterns[0] != "\u2581[^\u2581]*|[^\u2581]+")
            {
                throw new ModelFormatException(path, $"SentencePiece-style BPE with pre-tokenizer regexes [{string.Join(" | then | ", pre.Patterns)}]: GGUF's llama tokenizer does not split words; cannot be carried");
            }

            for (int i = 0; i < tok.VocabSize; i++)
            {
                if (tok.TypeOf(i) == TokenType.Normal && tok.TokenText(i).IndexOf(Escape, 1) > 0)
                {
                    throw new ModelFormatException(path, $"the Metaspace pre-tokenizer splits words at '\u2581' but token {i} '{tok.TokenText(i)}' spans one; GGUF's llama tokenizer would merge across it, so the tokenizer cannot be carried");
                }
            }
        }
    }

    /// <summary>Scores for SentencePiece-style merging that reproduce BPE by merge rank (see the class summary), checked.</summary>
    private static float[] ScoresFromMerges(string path, MergesBpeTokenizer tok, int n)
    {
        var firstRank = new Dictionary<string, int>(StringComparer.Ordinal);
        var lastRank = new Dictionary<string, int>(StringComparer.Ordinal);
        var mergeSet = new HashSet<string>(StringComparer.Ordinal);
        var merges = tok.Merges;
        for (int r = 0; r < merges.Count; r++)
        {
            var pair = merges[r];
            if (!mergeSet.Add(pair))
            {
                continue; // a repeated merge keeps its first rank, as the tokenizer does
            }

            int space = pair.IndexOf(' ', 1);
            var product = string.Concat(pair.AsSpan(0, space), pair.AsSpan(space + 1));
            if (tok.TokenId(product) < 0)
            {
                throw new ModelFormatException(path, $"merge {r} '{pair}' makes '{product}', which is not in the vocabulary; cannot be carried as SentencePiece scores");
            }

            if (lastRank.TryGetValue(product, out int last) && last != r - 1)
            {
                throw new ModelFormatException(path, $"the merges making '{product}' do not have consecutive ranks ({firstRank[product]}..{last}, then {r}); SentencePiece scores cannot reproduce their order, so the tokenizer cannot be carried");
            }

            firstRank.TryAdd(product, r);
            lastRank[product] = r;
        }

        var scores = new float[n];
        for (int id = 0; id < tok.VocabSize; id++)
        {
            var text = tok.TokenText(id);
            for (int k = 1; k < text.Length; k++)
            {
                if (char.IsLowSurrogate(text[k]))
                {
                    continue;
                }

                string left = text[..k], right = text[k..];
                if (tok.TokenId(left) >= 0 && tok.TokenId(right) >= 0 && !mergeSet.Contains(left + " " + right))
                {
                    throw new ModelFormatException(path, $"token {id} '{text}' splits into the tokens '{left}' and '{right}' but '{left} {right}' is not a merge: GGUF's llama tokenizer merges every such pair, so the tokenizer cannot be carried");
                }
            }

            if (firstRank.TryGetValue(text, out int rank))
            {
                scores[id] = -rank;
            }
        }

        return scores;
    }

    private static (bool AddBos, string? ChatTemplate) ReadSettings(string tokenizerJsonPath, MergesBpeTokenizer tok)
    {
        bool? addBos = null;
        string? template = null;
        var configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
                var root = doc.RootElement;
                if (root.ValueKind == JsonValueKind.Object)
                {
                    if (root.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False)
                    {
                        addBos = ab.GetBoolean();
                    }

                    if (root.TryGetProperty("chat_template", out var ct) && ct.ValueKind == JsonValueKind.String)
                    {
                        template = ct.GetString();
                    }
                }
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(configPath, $"not valid JSON: {e.Message}");
            }
        }

        if (addBos is null)
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJsonPath));
                addBos = tok.BosToken >= 0 && doc.RootElement.TryGetProperty("post_processor", out var pp) && pp.ValueKind == JsonValueKind.Object
                    && PutsFirst(pp, tok.TokenText(tok.BosToken));
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(tokenizerJsonPath, $"not valid JSON: {e.Message}");
            }
        }

        return (addBos.Value, template);
    }

    /// <summary>Whether a post-processor (TemplateProcessing, possibly in a Sequence) starts a single sequence with <paramref name="token"/>.</summary>
    private static bool PutsFirst(JsonElement pp, string token)
    {
        string type = pp.TryGetProperty("type", out var t) ? t.GetString() ?? string.Empty : string.Empty;
        if (type == "Sequence" && pp.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            return list.EnumerateArray().Any(p => p.ValueKind == JsonValueKind.Object && PutsFirst(p, token));
        }

        return type == "TemplateProcessing" && pp.TryGetProperty("single", out var single) && single.ValueKind == JsonValueKind.Array
            && single.GetArrayLength() > 0 && single[0].TryGetProperty("SpecialToken", out var st)
            && st.TryGetProperty("id", out var id) && id.GetString() == token;
    }
}
