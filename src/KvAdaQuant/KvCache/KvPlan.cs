using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>
/// A K spec and a V spec for every layer. Built from the <c>--kv</c> text syntax (uniform over layers) or from a
/// JSON plan file (<c>--kv-plan</c>, per layer); reports its exact memory and its average bits per cached element.
/// </summary>
public sealed partial class KvPlan
{
    private static readonly string[] SpecFields = ["bits", "group", "axis", "symmetric", "residual", "sinks", "rotate"];

    private readonly bool _uniformText;

    /// <summary>Creates a plan from per-layer specs; <paramref name="source"/> names it in error messages.</summary>
    public KvPlan(IReadOnlyList<KvLayerSpec> layers, string name, string source)
        : this(layers, name, source, uniformText: false)
    {
    }

    private KvPlan(IReadOnlyList<KvLayerSpec> layers, string name, string source, bool uniformText)
    {
        if (layers.Count == 0)
        {
            throw new ArgumentException($"{source}: layers is empty");
        }

        Layers = layers;
        Name = name;
        Source = source;
        _uniformText = uniformText;
    }

    /// <summary>Per-layer specs.</summary>
    public IReadOnlyList<KvLayerSpec> Layers { get; }

    /// <summary>Short name (the <c>--kv</c> text, or the plan's "name" / file name).</summary>
    public string Name { get; }

    /// <summary>Where the plan came from, for error messages (e.g. "--kv 'k4v2'" or "--kv-plan plan.json").</summary>
    public string Source { get; }

    /// <summary>Whether every layer stores K and V unquantized in the same precision (fp32 or fp16).</summary>
    public bool IsUniformFullPrecision => Layers.All(l => !l.K.IsQuantized && l.K.Bits == l.V.Bits && l.K.Bits == Layers[0].K.Bits);

    /// <summary>The same K/V specs for <paramref name="layers"/> layers.</summary>
    public static KvPlan Uniform(KvSpec k, KvSpec v, int layers, string? name = null) =>
        new(Enumerable.Repeat(new KvLayerSpec(k, v), layers).ToArray(), name ?? $"k{k}v{v}", name ?? "plan");

    /// <summary>
    /// Parses the <c>--kv</c> syntax for <paramref name="layers"/> layers: <c>fp32</c>, <c>fp16</c>, or
    /// <c>k&lt;B&gt;v&lt;B&gt;[:option]...</c> with B in 1, 1.58 (or t), 2, 3, 4, 5, 6, 8, 16 (fp16), 32 (fp32), and options
    /// <c>g&lt;N&gt;</c> (group size; 0 = automatic, 32), <c>r&lt;N&gt;</c> (residual tokens), <c>sink&lt;N&gt;</c> (sink tokens),
    /// <c>asym</c>/<c>sym</c>, <c>pt</c>/<c>pc</c> (per-token / per-channel), <c>rot</c> (rows rotated before they are
    /// quantized, <see cref="KvRotation"/>), each applying to both K and V, or to one
    /// of them when prefixed with <c>k</c> or <c>v</c> (e.g. <c>kpc</c>, <c>vg64</c>).
    /// </summary>
    public static KvPlan Parse(string text, int layers)
    {
        ArgumentNullException.ThrowIfNull(text);
        string src = $"--kv '{text}'";
        string t = text.Trim().ToLowerInvariant();
        if (t.Length == 0)
        {
            throw new ArgumentException($"{src}: empty cache spec (expected fp32, fp16 or e.g. k4v2)");
        }

        if (KvBitsInfo.TryParse(t) is { } whole && !whole.IsQuantized())
        {
            var fp = whole == KvBits.Fp16 ? KvSpec.Fp16 : KvSpec.Fp32;
            return new KvPlan(Enumerable.Repeat(new KvLayerSpec(fp, fp), layers).ToArray(), whole.Name(), src, true);
        }

        var parts = t.Split(':');
        if (KvBitsInfo.TryParse(parts[0]) is { } unquantized && !unquantized.IsQuantized())
        {
            throw new ArgumentException($"{src}: {unquantized.Name()} stores keys and values unquantized and takes no options ('{parts[1]}'); options apply to quantized sides of k<bits>v<bits> (bits 1 to 8)");
        }

        var m = BitsPattern().Match(parts[0]);
        if (!m.Success)
        {
            throw new ArgumentException($"{src}: '{parts[0]}' is not a cache type (expected fp32, fp16 or k<bits>v<bits> such as k4v2)");
        }

        var k = new KvSpec(ParseBits(m.Groups[1].Value, src, "K bits"));
        var v = new KvSpec(ParseBits(m.Groups[2].Value, src, "V bits"));

        // Each setting once per scope (both sides, k-prefixed, v-prefixed): asym:sym or kg8:kg16 contradict themselves.
        // A prefixed option after an unprefixed one (g32:kg64) refines one side and is fine.
        var given = new Dictionary<(char Scope, string Setting), string>();
        foreach (var raw in parts.Skip(1))
        {
            string opt = raw;
            bool forK = true, forV = true;
            if (opt.Length > 1 && (opt[0] == 'k' || opt[0] == 'v'))
            {
                forK = opt[0] == 'k';
                forV = !forK;
                opt = opt[1..];
            }

            string setting = opt switch
            {
                "asym" or "sym" => "symmetry",
                "pt" or "pc" => "axis",
                "rot" => "rotation",
                _ when opt.StartsWith("sink", StringComparison.Ordinal) => "sinks",
                _ when opt.StartsWith('g') => "group",
                _ when opt.StartsWith('r') => "residual",
                _ => string.Empty,
            };
            char scope = forK && forV ? '*' : forK ? 'k' : 'v';
            if (setting.Length > 0 && !given.TryAdd((scope, setting), raw))
            {
                string whom = scope == '*' ? "K and V" : scope == 'k' ? "K" : "V";
                throw new ArgumentException($"{src}: options '{given[(scope, setting)]}' and '{raw}' both set the {setting} of {whom}; give it once");
            }

            Func<KvSpec, KvSpec> apply = opt switch
            {
                "asym" => s => s with { Symmetric = false },
                "sym" => s => s with { Symmetric = true },
                "pt" => s => s with { Axis = QuantAxis.PerToken },
                "pc" => s => s with { Axis = QuantAxis.PerChannel },
                "rot" => s => s with { Rotate = true },
                _ when opt.StartsWith("sink", StringComparison.Ordinal) => s => s with { Sinks = ParseCount(opt[4..], src, raw, "sinks") },
                _ when opt.StartsWith('g') => s => s with { GroupSize = ParseCount(opt[1..], src, raw, "group") },
                _ when opt.StartsWith('r') => s => s with { Residual = ParseCount(opt[1..], src, raw, "residual") },
                _ => throw new ArgumentException($"{src}: unknown option '{raw}' (expected g<N>, r<N>, sink<N>, asym, sym, pt, pc, rot, optionally prefixed by k or v)"),
            };

            // Options configure the quantizer: one prefixed for an unquantized side, or one with no quantized side to
            // apply to, would be ignored; an unprefixed option on a mixed spec (k16v2:r4) sets the quantized side only.
            if (forK != forV && !(forK ? k : v).IsQuantized)
            {
                string side = forK ? "K" : "V";
                throw new ArgumentException($"{src}: option '{raw}' sets {side}, which is {(forK ? k : v).Bits.Name()} (unquantized); options apply only to quantized sides (bits 1 to 8)");
            }

            if (!k.IsQuantized && !v.IsQuantized)
            {
                throw new ArgumentException($"{src}: option '{raw}' has nothing to apply to: K and V are both unquantized ({k.Bits.Name()}, {v.Bits.Name()}); options apply only to quantized sides (bits 1 to 8)");
            }

            forK &= k.IsQuantized;
            forV &= v.IsQuantized;
            if (forK)
            {
                k = apply(k);
            }

            if (forV)
            {
                v = apply(v);
            }
        }

        return new KvPlan(Enumerable.Repeat(new KvLayerSpec(k, v), layers).ToArray(), t, src, true);
    }

    /// <summary>Reads a JSON plan file (schema in the README).</summary>
    public static KvPlan Load(string path) => Load(path, "--kv-plan");

    /// <summary>Reads a JSON plan file given to <paramref name="option"/>, which its errors name (e.g. <c>--plans a.json: ...</c>).</summary>
    public static KvPlan Load(string path, string option)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(Directory.Exists(path) ? $"{option} {path}: is a folder, not a plan file" : $"{option} {path}: file not found");
        }

        return FromJson(File.ReadAllText(path), $"{option} {path}", Path.GetFileNameWithoutExtension(path));
    }

    /// <summary>Parses a JSON plan; <paramref name="source"/> prefixes every error message.</summary>
    public static KvPlan FromJson(string json, string source, string defaultName = "plan")
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{source}: malformed JSON: {e.Message}");
        }

        using (doc)
        {
            if (Formats.JsonText.LoneSurrogate(doc.RootElement) is { } at)
            {
                throw new ArgumentException($"{source}: the string at {at} {Formats.JsonText.LoneSurrogateProblem}");
            }

            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new ArgumentException($"{source}: the plan must be a JSON object with a \"layers\" array, found {root.ValueKind}");
            }

            string name = defaultName;
            JsonElement? layersEl = null;
            foreach (var p in root.EnumerateObject())
            {
                switch (p.Name)
                {
                    case "name":
                        name = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : throw new ArgumentException($"{source}: name must be a string, found {p.Value.GetRawText()}");
                        break;
                    case "description":
                        if (p.Value.ValueKind != JsonValueKind.String)
                        {
                            throw new ArgumentException($"{source}: description must be a string, found {p.Value.GetRawText()}");
                        }

                        break;
                    case "layers":
                        layersEl = p.Value;
                        break;
                    default:
                        throw new ArgumentException($"{source}: unknown field '{p.Name}' (expected name, description, layers)");
                }
            }

            if (layersEl is not { ValueKind: JsonValueKind.Array } arr)
            {
                throw new ArgumentException(layersEl is null ? $"{source}: layers is missing" : $"{source}: layers must be an array, found {layersEl.Value.GetRawText()}");
            }

            var layers = new List<KvLayerSpec>();
            int i = 0;
            foreach (var entry in arr.EnumerateArray())
            {
                string f = $"layers[{i}]";
                if (entry.ValueKind != JsonValueKind.Object)
                {
                    throw new ArgumentException($"{source}: {f} must be an object with \"k\" and \"v\", found {entry.GetRawText()}");
                }

                KvSpec? k = null, v = null;
                foreach (var p in entry.EnumerateObject())
                {
                    switch (p.Name)
                    {
                        case "k":
                            k = ParseSpec(p.Value, source, $"{f}.k");
                            break;
                        case "v":
                            v = ParseSpec(p.Value, source, $"{f}.v");
                            break;
                        case "layer":
                            if (WholeNumber(p.Value) is not { } li)
                            {
                                throw new ArgumentException($"{source}: {f}.layer must be a whole number (the entry's index, {i}), found {p.Value.GetRawText()}");
                            }

                            if (li != i)
                            {
                                throw new ArgumentException($"{source}: {f}.layer is {p.Value.GetRawText()}, expected {i} (layers are listed in order)");
                            }

                            break;
                        default:
                            throw new ArgumentException($"{source}: {f}: unknown field '{p.Name}' (expected layer, k, v)");
                    }
                }

                layers.Add(new KvLayerSpec(
                    k ?? throw new ArgumentException($"{source}: {f}.k is missing"),
                    v ?? throw new ArgumentException($"{source}: {f}.v is missing")));
                i++;
            }

            return new KvPlan(layers, name, source);
        }
    }

    /// <summary>Checks the plan against a model's cache shape; throws <see cref="ArgumentException"/> naming the field.</summary>
    public void Validate(int layers, int headDim)
    {
        if (Layers.Count != layers)
        {
            throw new ArgumentException($"{Source}: layers has {Layers.Count} entries but the model has {layers} layers");
        }

        for (int i = 0; i < Layers.Count; i++)
        {
            string f = _uniformText ? string.Empty : $"layers[{i}].";
            var problem = Layers[i].K.Problem(headDim, f + "k.") ?? Layers[i].V.Problem(headDim, f + "v.");
            if (problem is not null)
            {
                throw new ArgumentException($"{Source}: {problem}");
            }

            if (_uniformText)
            {
                break;
            }
        }
    }

    /// <summary>Steady-state bytes per token (all layers, K and V, every KV head) once tokens are quantized.</summary>
    public double BytesPerToken(int kvHeads, int headDim) => Layers.Sum(l => kvHeads * (l.K.SteadyBytesPerToken(headDim) + l.V.SteadyBytesPerToken(headDim)));

    /// <summary>Exact bytes the whole cache holds after <paramref name="tokens"/> positions (sinks and residual in FP16 included).</summary>
    public long BytesAt(int kvHeads, int headDim, int tokens) => Layers.Sum(l => kvHeads * (l.K.BytesPerHead(headDim, tokens) + l.V.BytesPerHead(headDim, tokens)));

    /// <summary>Average stored bits per cached element after <paramref name="tokens"/> positions, counting scales, zero points, residual and sinks.</summary>
    public double AverageBits(int kvHeads, int headDim, int tokens) =>
        tokens == 0 ? 0 : 8.0 * BytesAt(kvHeads, headDim, tokens) / ((double)tokens * Layers.Count * 2 * kvHeads * headDim);

    /// <summary>The plan as JSON in the documented schema.</summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", Name);
            w.WriteStartArray("layers");
            for (int i = 0; i < Layers.Count; i++)
            {
                w.WriteStartObject();
                w.WriteNumber("layer", i);
                WriteSpec(w, "k", Layers[i].K);
                WriteSpec(w, "v", Layers[i].V);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>
    /// Null when every quantized K and V spec of the plan quantizes some position of a <paramref name="capacity"/>-position
    /// context; else what one that never does keeps out of quantization (its sinks, residual window and, per channel,
    /// the chunk it waits to fill), for a note that the cache would run in FP16 there.
    /// </summary>
    public string? NeverQuantized(int capacity)
    {
        for (int l = 0; l < Layers.Count; l++)
        {
            foreach (var (kind, spec) in new[] { ("K", Layers[l].K), ("V", Layers[l].V) })
            {
                if (spec.IsQuantized && spec.QuantizedTokens(capacity) == 0)
                {
                    string chunk = spec.Axis == QuantAxis.PerChannel ? $" plus a per-channel chunk of {spec.TokenGroup} tokens" : string.Empty;
                    return $"layer {l} {kind} ({spec}) keeps {spec.Sinks} sink and {spec.Residual} residual positions in FP16{chunk}: none of the context's {capacity} positions is ever quantized there";
                }
            }
        }

        return null;
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    private static void WriteSpec(Utf8JsonWriter w, string name, KvSpec s)
    {
        w.WriteStartObject(name);
        if (s.IsQuantized)
        {
            w.WriteNumber("bits", s.Bits == KvBits.Ternary ? 1.58 : s.Bits.IntegerBits());
            w.WriteNumber("group", s.GroupSize);
            w.WriteString("axis", s.Axis == QuantAxis.PerToken ? "token" : "channel");
            w.WriteBoolean("symmetric", s.Symmetric);
            w.WriteNumber("residual", s.Residual);
            w.WriteNumber("sinks", s.Sinks);
            if (s.Rotate)
            {
                w.WriteBoolean("rotate", true);
            }
        }
        else
        {
            w.WriteString("bits", s.Bits.Name());
        }

        w.WriteEndObject();
    }

    private static KvSpec ParseSpec(JsonElement e, string source, string field)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw new ArgumentException($"{source}: {field} must be an object such as {{\"bits\": 4}}, found {e.GetRawText()}");
        }

        KvBits? bits = null;
        string? option = null;
        var spec = new KvSpec(KvBits.Four);
        foreach (var p in e.EnumerateObject())
        {
            string f = $"{field}.{p.Name}";
            if (p.Name != "bits")
            {
                option ??= p.Name;
            }

            switch (p.Name)
            {
                case "bits":
                    string raw = p.Value.ValueKind switch
                    {
                        // An integral JSON number is that integer whatever its spelling (4, 4.0, 4e0); others as written (1.58).
                        JsonValueKind.Number => WholeNumber(p.Value) is { } whole ? whole.ToString(CultureInfo.InvariantCulture) : p.Value.GetRawText(),
                        JsonValueKind.String => p.Value.GetString()!,
                        _ => throw new ArgumentException($"{source}: {f} must be a number or \"fp16\"/\"fp32\", found {p.Value.GetRawText()}"),
                    };
                    bits = KvBitsInfo.TryParse(raw) ?? throw new ArgumentException($"{source}: {f} {raw} is not one of {KvBitsInfo.Accepted}");
                    break;
                case "group":
                    spec = spec with { GroupSize = JsonCount(p.Value, source, f) };
                    break;
                case "residual":
                    spec = spec with { Residual = JsonCount(p.Value, source, f) };
                    break;
                case "sinks":
                    spec = spec with { Sinks = JsonCount(p.Value, source, f) };
                    break;
                case "symmetric":
                    spec = spec with { Symmetric = JsonFlag(p.Value, source, f) };
                    break;
                case "rotate":
                    spec = spec with { Rotate = JsonFlag(p.Value, source, f) };
                    break;
                case "axis":
                    spec = spec with
                    {
                        Axis = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() switch
                        {
                            "token" => QuantAxis.PerToken,
                            "channel" => QuantAxis.PerChannel,
                            var s => throw new ArgumentException($"{source}: {f} '{s}' is not \"token\" or \"channel\""),
                        }
                        : throw new ArgumentException($"{source}: {f} must be \"token\" or \"channel\", found {p.Value.GetRawText()}"),
                    };
                    break;
                default:
                    throw new ArgumentException($"{source}: {field}: unknown field '{p.Name}' (expected {string.Join(", ", SpecFields)})");
            }
        }

        spec = spec with { Bits = bits ?? throw new ArgumentException($"{source}: {field}.bits is missing") };
        if (!spec.IsQuantized && option is not null)
        {
            throw new ArgumentException($"{source}: {field}.{option} applies only to quantized bits (1 to 8), but {field}.bits is {spec.Bits.Name()}; an unquantized spec takes no other field");
        }

        return spec;
    }

    private static bool JsonFlag(JsonElement e, string source, string field) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw new ArgumentException($"{source}: {field} must be true or false, found {e.GetRawText()}"),
    };

    private static int JsonCount(JsonElement e, string source, string field) =>
        WholeNumber(e) is { } n && n >= 0 ? n
        : throw new ArgumentException($"{source}: {field} must be a whole number >= 0, found {e.GetRawText()}");

    /// <summary>The value of a JSON number that is an integer in int range however it is written (4, 4.0, 4e0); else null (strings, null, 4.5, ...).</summary>
    private static int? WholeNumber(JsonElement e) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue ? (int)d : null;

    private static KvBits ParseBits(string text, string src, string what) =>
        KvBitsInfo.TryParse(text) ?? throw new ArgumentException($"{src}: {what} '{text}' is not one of {KvBitsInfo.Accepted}");

    private static int ParseCount(string digits, string src, string option, string field) =>
        int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n
        : throw new ArgumentException($"{src}: option '{option}': {field} must be a whole number >= 0");

    [GeneratedRegex(@"^k(fp16|fp32|f16|f32|t|[0-9.]+)v(fp16|fp32|f16|f32|t|[0-9.]+)$")]
    private static partial Regex BitsPattern();
}
