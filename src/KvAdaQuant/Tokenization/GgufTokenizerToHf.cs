using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Writes a GGUF tokenizer (<c>tokenizer.ggml.*</c> metadata) as a Hugging Face <c>tokenizer.json</c> (BPE model) plus a
/// <c>tokenizer_config.json</c>, or refuses with the reason:
/// <list type="bullet">
/// <item><c>llama</c> (SentencePiece BPE by score) is laid out as HF's LlamaConverter lays out Llama 2: <c>Prepend</c> '▁' and
/// <c>Replace</c> ' ' → '▁' normalizers (no Prepend when <c>add_space_prefix</c> is false), <c>byte_fallback</c>, and merges
/// extracted from the vocabulary: every split of every token into two tokens, tokens by descending score (then id), the
/// splits of one token by the ids of their halves;</item>
/// <item><c>gpt2</c> (byte-level BPE) with a <c>tokenizer.ggml.pre</c> kvaq knows: its regexes as <c>Split</c> pre-tokenizers
/// (behaviour Isolated) before a <c>ByteLevel</c> one without a regex, the merges as they are, <c>ignore_merges</c> as
/// llama.cpp sets it for that pre-tokenizer.</item>
/// </list>
/// CONTROL and UNKNOWN tokens become special added tokens, USER_DEFINED ones non-special added tokens; UNUSED tokens (such
/// as the <c>[PAD{id}]</c> padding of llama.cpp's converter) are left out, so their ids are empty slots. BOS (and EOS)
/// are put in by a <c>TemplateProcessing</c> post-processor when <c>add_bos_token</c> (default true for llama, false for
/// gpt2) and <c>add_eos_token</c> say so. The caller checks the result with <see cref="TokenizerEquivalence"/>.
/// </summary>
public static class GgufTokenizerToHf
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The text of <c>tokenizer.json</c> for <paramref name="metadata"/>.</summary>
    public static string TokenizerJson(GgufTokenizerMetadata metadata)
    {
        var v = metadata.Values;
        string path = metadata.Source;
        var model = metadata.Model ?? throw new ModelFormatException(path, "no tokenizer: metadata 'tokenizer.ggml.model' is missing");
        var tokens = v.GetValueOrDefault("tokenizer.ggml.tokens") as string[] ?? throw new ModelFormatException(path, "metadata 'tokenizer.ggml.tokens' is missing");
        var types = (v.GetValueOrDefault("tokenizer.ggml.token_type") as int[])?.Select(t => (TokenType)t).ToArray()
            ?? Enumerable.Repeat(TokenType.Normal, tokens.Length).ToArray();
        if (types.Length != tokens.Length)
        {
            throw new ModelFormatException(path, $"metadata 'tokenizer.ggml.token_type' has {types.Length} entries for {tokens.Length} tokens");
        }

        var ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!ids.TryAdd(tokens[i], i))
            {
                throw new ModelFormatException(path, $"token '{tokens[i]}' appears at ids {ids[tokens[i]]} and {i}; tokenizer.json needs unique tokens");
            }
        }

        int? Id(string key) => v.GetValueOrDefault(key) is { } x && GgufFile.ToInteger(path, key, x) is long l && l >= 0 && l < tokens.Length ? (int)l : null;
        int? bos = Id("tokenizer.ggml.bos_token_id"), eos = Id("tokenizer.ggml.eos_token_id"), unk = Id("tokenizer.ggml.unknown_token_id");
        bool addBos = v.GetValueOrDefault("tokenizer.ggml.add_bos_token") as bool? ?? model == "llama";
        bool addEos = v.GetValueOrDefault("tokenizer.ggml.add_eos_token") as bool? ?? false;

        JsonNode? normalizer, preTokenizer, decoder;
        JsonArray merges;
        bool ignoreMerges = false, byteFallback;
        switch (model)
        {
            case "llama":
                {
                    var scores = v.GetValueOrDefault("tokenizer.ggml.scores") as float[] ?? new float[tokens.Length];
                    if (scores.Length != tokens.Length)
                    {
                        throw new ModelFormatException(path, $"metadata 'tokenizer.ggml.scores' has {scores.Length} entries for {tokens.Length} tokens");
                    }

                    bool prefix = v.GetValueOrDefault("tokenizer.ggml.add_space_prefix") as bool? ?? true;
                    var replace = new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" };
                    normalizer = prefix
                        ? new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" }, replace) }
                        : replace;
                    preTokenizer = null;
                    var steps = new JsonArray(
                        new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                        new JsonObject { ["type"] = "ByteFallback" },
                        new JsonObject { ["type"] = "Fuse" });
                    if (prefix)
                    {
                        steps.Add(new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 });
                    }

                    decoder = new JsonObject { ["type"] = "Sequence", ["decoders"] = steps };
                    merges = SentencePieceMerges(tokens, scores, types, ids);
                    byteFallback = true;
                    break;
                }

            case "gpt2":
                {
                    var pre = v.GetValueOrDefault("tokenizer.ggml.pre") as string;
                    var known = BpePreTokenizer.ForGgufPre(pre)
                        ?? throw new ModelFormatException(path, $"pre-tokenizer 'tokenizer.ggml.pre' = '{pre}' is not one kvaq can write to tokenizer.json");
                    var list = new JsonArray();
                    foreach (var p in known.PreTokenizer.Patterns)
                    {
                        list.Add(new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = p }, ["behavior"] = "Isolated", ["invert"] = false });
                    }

                    list.Add(new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false });
                    normalizer = null;
                    preTokenizer = new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = list };
                    decoder = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true };
                    var m = v.GetValueOrDefault("tokenizer.ggml.merges") as string[] ?? throw new ModelFormatException(path, "metadata 'tokenizer.ggml.merges' is missing");
                    merges = new JsonArray(m.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray());
                    ignoreMerges = known.IgnoreMerges;
                    byteFallback = false;
                    break;
                }

            default:
                throw new ModelFormatException(path, $"tokenizer model 'tokenizer.ggml.model' = '{model}' cannot be written as tokenizer.json (kvaq writes llama and gpt2)");
        }

        var added = new JsonArray();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] is TokenType.Control or TokenType.Unknown or TokenType.UserDefined)
            {
                added.Add(new JsonObject
                {
                    ["id"] = i,
                    ["content"] = tokens[i],
                    ["single_word"] = false,
                    ["lstrip"] = false,
                    ["rstrip"] = false,
                    ["normalized"] = false,
                    ["special"] = types[i] != TokenType.UserDefined,
                });
            }
        }

        var vocab = new JsonObject();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] != TokenType.Unused)
            {
                vocab[tokens[i]] = i;
            }
        }

        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = normalizer,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = PostProcessor(tokens, addBos ? bos : null, addEos ? eos : null),
            ["decoder"] = decoder,
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = unk is { } u ? tokens[u] : null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = byteFallback,
                ["byte_fallback"] = byteFallback,
                ["ignore_merges"] = ignoreMerges,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
        return json.ToJsonString(Indented);
    }

    /// <summary>The text of a <c>tokenizer_config.json</c> naming the special tokens, BOS/EOS use, and the chat template if any.</summary>
    public static string TokenizerConfigJson(GgufTokenizerMetadata metadata, int contextLength)
    {
        var v = metadata.Values;
        var tokens = v.GetValueOrDefault("tokenizer.ggml.tokens") as string[] ?? [];
        string path = metadata.Source;
        string? Text(string key) => v.GetValueOrDefault(key) is { } x && GgufFile.ToInteger(path, key, x) is long l && l >= 0 && l < tokens.Length ? tokens[l] : null;
        var json = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["bos_token"] = Text("tokenizer.ggml.bos_token_id"),
            ["eos_token"] = Text("tokenizer.ggml.eos_token_id"),
            ["unk_token"] = Text("tokenizer.ggml.unknown_token_id"),
            ["add_bos_token"] = v.GetValueOrDefault("tokenizer.ggml.add_bos_token") as bool? ?? metadata.Model == "llama",
            ["add_eos_token"] = v.GetValueOrDefault("tokenizer.ggml.add_eos_token") as bool? ?? false,
            ["clean_up_tokenization_spaces"] = false,
            ["model_max_length"] = contextLength,
        };
        if (v.GetValueOrDefault("tokenizer.chat_template") is string template)
        {
            json["chat_template"] = template;
        }

        return json.ToJsonString(Indented);
    }

    private static JsonArray SentencePieceMerges(string[] tokens, float[] scores, TokenType[] types, Dictionary<string, int> allIds)
    {
        var ids = allIds.Where(p => types[p.Value] != TokenType.Unused).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        var merges = new JsonArray();
        foreach (int id in Enumerable.Range(0, tokens.Length).Where(i => types[i] != TokenType.Unused).OrderByDescending(i => scores[i]).ThenBy(i => i))
        {
            var piece = tokens[id];
            var local = new List<(int L, int R, string Left, string Right)>();
            for (int k = 1; k < piece.Length; k++)
            {
                if (char.IsLowSurrogate(piece[k]))
                {
                    continue;
                }

                if (ids.TryGetValue(piece[..k], out int l) && ids.TryGetValue(piece[k..], out int r))
                {
                    local.Add((l, r, piece[..k], piece[k..]));
                }
            }

            foreach (var x in local.OrderBy(x => x.L).ThenBy(x => x.R))
            {
                merges.Add(new JsonArray(x.Left, x.Right));
            }
        }

        return merges;
    }

    private static JsonNode? PostProcessor(string[] tokens, int? bos, int? eos)
    {
        if (bos is null && eos is null)
        {
            return null;
        }

        JsonArray Template(params string[] sequences)
        {
            var a = new JsonArray();
            foreach (var s in sequences)
            {
                if (bos is { } b)
                {
                    a.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[b], ["type_id"] = 0 } });
                }

                a.Add(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = s, ["type_id"] = 0 } });
                if (eos is { } e)
                {
                    a.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[e], ["type_id"] = 0 } });
                }
            }

            return a;
        }

        var special = new JsonObject();
        foreach (var id in new[] { bos, eos }.OfType<int>().Distinct())
        {
            special[tokens[id]] = new JsonObject { ["id"] = tokens[id], ["ids"] = new JsonArray(id), ["tokens"] = new JsonArray(tokens[id]) };
        }

        return new JsonObject { ["type"] = "TemplateProcessing", ["single"] = Template("A"), ["pair"] = Template("A", "B"), ["special_tokens"] = special };
    }
}
