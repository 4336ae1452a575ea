using System.Text;
using System.Text.Json;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Tokenization;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> with a BPE model into a <see cref="MergesBpeTokenizer"/>: byte-level
/// tokenizers (GPT-2, Llama 3, Qwen2: <c>ByteLevel</c> pre-tokenizer, optional <c>Split</c> regexes) and
/// SentencePiece-style ones (Llama 2: <c>Prepend</c>/<c>Replace</c> normalizers or a <c>Metaspace</c>
/// pre-tokenizer, <c>byte_fallback</c>). Added tokens are matched whole: <c>special</c> ones as control tokens
/// (only when parsing special tokens), the others always.
/// </summary>
public static class HfTokenizerJson
{
    /// <summary>HF's GPT-2 byte-level pattern (used when the ByteLevel pre-tokenizer has use_regex).</summary>
    public const string ByteLevelPattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Loads <paramref name="path"/>; BOS/EOS ids from the model's config (-1: guessed from added tokens).</summary>
    public static MergesBpeTokenizer Load(string path, int bos = -1, int eos = -1)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return Build(path, doc.RootElement, bos, eos);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}");
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            // JsonElement's own errors: a value of another kind, a required property missing, a number out of range.
            throw new ModelFormatException(path, $"unexpected JSON structure: {e.Message}");
        }
    }

    private static MergesBpeTokenizer Build(string path, JsonElement root, int bos, int eos)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFormatException(path, $"should hold a JSON object with a \"model\", found {root.ValueKind}");
        }

        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFormatException(path, "no \"model\" object");
        }

        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? string.Empty : "BPE";
        if (type != "BPE")
        {
            throw new ModelFormatException(path, $"model type '{type}' is not supported (only BPE)");
        }

        foreach (var unsupported in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (model.TryGetProperty(unsupported, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
            {
                throw new ModelFormatException(path, $"BPE option '{unsupported}' is not supported");
            }
        }

        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFormatException(path, "BPE model has no \"vocab\" object");
        }

        if (!vocab.EnumerateObject().Any())
        {
            throw new ModelFormatException(path, "model.vocab is empty: a BPE tokenizer needs its tokens there (added_tokens only name the special ones)");
        }

        var byId = new Dictionary<int, string>();
        foreach (var p in vocab.EnumerateObject())
        {
            int id = IdOf(path, p.Value, $"model.vocab['{p.Name}']");
            if (id < 0 || id >= 1 << 22)
            {
                throw new ModelFormatException(path, $"token '{p.Name}' has id {id}, out of range");
            }

            byId[id] = p.Name;
        }

        var added = new Dictionary<int, (string Content, bool Special, bool LStrip, bool RStrip)>();
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
        {
            int k = 0;
            foreach (var a in at.EnumerateArray())
            {
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("id", out var idValue)
                    || !a.TryGetProperty("content", out var contentValue) || contentValue.ValueKind != JsonValueKind.String)
                {
                    throw new ModelFormatException(path, $"added_tokens[{k}] should be an object with an integer \"id\" and a string \"content\", found {Excerpt(a)}");
                }

                int id = IdOf(path, idValue, $"added_tokens[{k}].id");
                k++;
                if (id < 0 || id >= 1 << 22)
                {
                    throw new ModelFormatException(path, $"added token id {id} is out of range");
                }

                string content = contentValue.GetString()!;
                added[id] = (content, Flag(a, "special"), Flag(a, "lstrip"), Flag(a, "rstrip"));
                byId[id] = content;
            }
        }

        int n = byId.Count == 0 ? 0 : byId.Keys.Max() + 1;
        if (n == 0)
        {
            throw new ModelFormatException(path, "vocabulary is empty");
        }

        var tokens = new string[n];
        var types = new TokenType[n];
        bool byteFallback = Flag(model, "byte_fallback");
        for (int i = 0; i < n; i++)
        {
            tokens[i] = byId.TryGetValue(i, out var s) ? s : $"[EMPTY_{i}]";
            types[i] = !byId.ContainsKey(i) ? TokenType.Unused
                : added.TryGetValue(i, out var a) ? (a.Special ? TokenType.Control : TokenType.UserDefined)
                : byteFallback && s!.Length == 6 && s.StartsWith("<0x", StringComparison.Ordinal) && s[5] == '>' ? TokenType.Byte
                : TokenType.Normal;
        }

        int unk = -1;
        if (model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String)
        {
            unk = Array.IndexOf(tokens, u.GetString());
            if (unk >= 0 && !added.ContainsKey(unk))
            {
                types[unk] = TokenType.Unknown;
            }
        }

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var m) && m.ValueKind == JsonValueKind.Array)
        {
            foreach (var e in m.EnumerateArray())
            {
                merges.Add(e.ValueKind switch
                {
                    JsonValueKind.String => e.GetString()!,
                    JsonValueKind.Array when e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String
                        => e[0].GetString() + " " + e[1].GetString(),
                    _ => throw new ModelFormatException(path, $"model.merges[{merges.Count}] should be a string \"a b\" or a pair of strings, found {Excerpt(e)}"),
                });
            }
        }

        // Text preparation.
        bool byteLevel = false, escape = false, addPrefix = false;
        var scheme = SpacePrefixScheme.Never;
        var patterns = new List<string>();
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object)
        {
            foreach (var nz in Flatten(norm, "normalizers"))
            {
                switch (nz.GetProperty("type").GetString())
                {
                    case "Prepend" when nz.GetProperty("prepend").GetString() == "\u2581":
                        scheme = SpacePrefixScheme.Always;
                        break;
                    case "Replace" when nz.GetProperty("pattern").TryGetProperty("String", out var ps) && ps.GetString() == " " && nz.GetProperty("content").GetString() == "\u2581":
                        escape = true;
                        break;
                    case "NFC":
                        break; // text is taken as given; NFC-normalized input tokenizes identically
                    case var other:
                        throw new ModelFormatException(path, $"normalizer '{other}' is not supported (supported: Prepend \u2581, Replace ' ' by \u2581, NFC)");
                }
            }
        }

        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            foreach (var pt in Flatten(pre, "pretokenizers"))
            {
                switch (pt.GetProperty("type").GetString())
                {
                    case "ByteLevel":
                        byteLevel = true;
                        addPrefix |= Flag(pt, "add_prefix_space");
                        if (!pt.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False)
                        {
                            patterns.Add(ByteLevelPattern);
                        }

                        break;
                    case "Split":
                        if (!pt.GetProperty("pattern").TryGetProperty("Regex", out var rx) || Flag(pt, "invert")
                            || (pt.TryGetProperty("behavior", out var bh) && bh.GetString() != "Isolated"))
                        {
                            throw new ModelFormatException(path, "only Split pre-tokenizers with a Regex pattern, behavior Isolated and no invert are supported");
                        }

                        patterns.Add(rx.GetString()!);
                        break;
                    case "Digits" when Flag(pt, "individual_digits"):
                        patterns.Add(@"\p{N}");
                        break;
                    case "Metaspace":
                        escape = true;
                        string ps = pt.TryGetProperty("prepend_scheme", out var psv) ? psv.GetString() ?? "always" : (Flag(pt, "add_prefix_space", true) ? "always" : "never");
                        scheme = ps switch { "first" => SpacePrefixScheme.First, "never" => SpacePrefixScheme.Never, _ => SpacePrefixScheme.Always };
                        if (Flag(pt, "split", true))
                        {
                            patterns.Add("\u2581[^\u2581]*|[^\u2581]+");
                        }

                        break;
                    case var other:
                        throw new ModelFormatException(path, $"pre-tokenizer '{other}' is not supported (supported: ByteLevel, Split, Digits, Metaspace)");
                }
            }
        }

        if (!byteLevel && root.TryGetProperty("decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
        {
            byteLevel = Flatten(dec, "decoders").Any(d => d.GetProperty("type").GetString() == "ByteLevel");
        }

        if (byteLevel)
        {
            scheme = addPrefix ? SpacePrefixScheme.Always : SpacePrefixScheme.Never;
        }

        int Find(params string[] names) => names.Select(nm => Array.IndexOf(tokens, nm)).FirstOrDefault(i => i >= 0, -1);
        var options = new MergesBpeOptions
        {
            ByteLevel = byteLevel,
            EscapeSpaces = escape && !byteLevel,
            SpacePrefix = scheme,
            PreTokenizer = patterns.Count > 0 ? CreatePreTokenizer(path, patterns) : null,
            IgnoreMerges = Flag(model, "ignore_merges"),
            ByteFallback = byteFallback,
            Unknown = unk,
            Bos = bos >= 0 ? bos : Find("<s>", "<|begin_of_text|>", "<bos>"),
            Eos = eos >= 0 ? eos : Find("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"),
            LStrip = added.Where(a => a.Value.LStrip).Select(a => a.Key).ToHashSet(),
            RStrip = added.Where(a => a.Value.RStrip).Select(a => a.Key).ToHashSet(),
        };
        return new MergesBpeTokenizer(path, tokens, types, merges, options);
    }

    private static BpePreTokenizer CreatePreTokenizer(string path, List<string> patterns)
    {
        try
        {
            return new BpePreTokenizer("tokenizer.json", patterns.ToArray());
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, $"pre-tokenizer regex cannot be used: {e.Message}");
        }
    }

    private static IEnumerable<JsonElement> Flatten(JsonElement e, string listName)
    {
        if (e.TryGetProperty("type", out var t) && t.GetString() == "Sequence" && e.TryGetProperty(listName, out var list))
        {
            return list.EnumerateArray().SelectMany(x => Flatten(x, listName)).ToList();
        }

        return [e];
    }

    /// <summary>A token id: a JSON integer within int's range, or an error naming <paramref name="what"/>.</summary>
    private static int IdOf(string path, JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) ? id : throw new ModelFormatException(path, $"{what} should be an integer token id, found {Excerpt(v)}");

    /// <summary>A value's JSON text, cut at 80 characters.</summary>
    private static string Excerpt(JsonElement v)
    {
        string raw = v.GetRawText();
        return raw.Length <= 80 ? raw : string.Concat(raw.AsSpan(0, 80), "...");
    }

    private static bool Flag(JsonElement e, string name, bool fallback = false) =>
        e.TryGetProperty(name, out var v) ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => fallback } : fallback;
}
