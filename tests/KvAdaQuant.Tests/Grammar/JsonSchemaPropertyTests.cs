using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;
using KvAdaQuant.Grammar;

namespace KvAdaQuant.Tests.Grammar;

/// <summary>
/// Random schemas from a small family (objects of integers, strings, booleans, nulls, enums and arrays of them, with bounds,
/// required properties and closed or open objects) and random documents near them: the grammar accepts a document exactly
/// when System.Text.Json reads it and a direct validator for the family says it is valid.
/// </summary>
public class JsonSchemaPropertyTests
{
    private static Gen<int?> Maybe(Gen<int> g) => Gen.Bool.SelectMany(b => b ? g.Select(x => (int?)x) : Gen.Const((int?)null));

    private static readonly string[] Words = ["a", "b c", "d\"e", "f\\g", "é", "h\ni", ""];

    // A schema of the family, and a generator of documents near it (valid or not).
    private sealed record Case(JsonObject Schema, Func<Random, JsonNode?> Near);

    private static readonly Gen<JsonObject> Leaf = Gen.OneOf(
        Gen.Select(Maybe(Gen.Int[-20, 20]), Maybe(Gen.Int[0, 15])).Select((min, span) =>
        {
            var s = new JsonObject { ["type"] = "integer" };
            if (min is { } m)
            {
                s["minimum"] = m;
            }

            if (span is { } w)
            {
                s["maximum"] = (min ?? 0) + w;
            }

            return s;
        }),
        Gen.Select(Maybe(Gen.Int[0, 3]), Maybe(Gen.Int[0, 3])).Select((min, span) =>
        {
            var s = new JsonObject { ["type"] = "string" };
            if (min is { } m)
            {
                s["minLength"] = m;
            }

            if (span is { } w)
            {
                s["maxLength"] = (min ?? 0) + w;
            }

            return s;
        }),
        Gen.Const(() => new JsonObject { ["type"] = "boolean" }),
        Gen.Const(() => new JsonObject { ["type"] = new JsonArray("integer", "null") }),
        Gen.Int[1, 3].Select(n => new JsonObject { ["enum"] = new JsonArray([.. new[] { "x", "y z", "w" }.Take(n).Select(v => (JsonNode)v!)]) }));

    private static readonly Gen<JsonObject> Member = Gen.Frequency(
        (3, Leaf),
        (1, Gen.Select(Leaf, Maybe(Gen.Int[0, 2]), Maybe(Gen.Int[0, 2])).Select((item, min, span) =>
        {
            var s = new JsonObject { ["type"] = "array", ["items"] = item };
            if (min is { } m)
            {
                s["minItems"] = m;
            }

            if (span is { } w)
            {
                s["maxItems"] = (min ?? 0) + w;
            }

            return s;
        })));

    // Objects whose required properties come first (the converter's order), closed or open to extra integers.
    private static readonly Gen<JsonObject> Schema =
        Gen.Select(Member.Array[1, 4], Gen.Int[0, 4], Gen.Int[0, 2]).Select((members, required, additional) =>
        {
            var props = new JsonObject();
            var req = new JsonArray();
            for (int i = 0; i < members.Length; i++)
            {
                props["p" + i] = members[i];
                if (i < required)
                {
                    req.Add("p" + i);
                }
            }

            var s = new JsonObject { ["type"] = "object", ["properties"] = props, ["required"] = req };
            if (additional == 1)
            {
                s["additionalProperties"] = false;
            }
            else if (additional == 2)
            {
                s["additionalProperties"] = new JsonObject { ["type"] = "integer" };
            }

            return s;
        });

    // A value near `schema`: usually valid, sometimes off by one bound, of another type, or with a property too many or too few.
    private static JsonNode? Near(JsonObject schema, Random r)
    {
        if (r.Next(12) == 0)
        {
            return r.Next(3) switch { 0 => JsonValue.Create("s"), 1 => JsonValue.Create(7), _ => null };
        }

        if (schema["enum"] is JsonArray values)
        {
            return r.Next(6) == 0 ? JsonValue.Create("v") : values[r.Next(values.Count)]!.DeepClone();
        }

        var type = schema["type"];
        string t = type is JsonArray list ? (string)list[r.Next(list.Count)]! : (string)type!;
        switch (t)
        {
            case "null":
                return null;
            case "boolean":
                return JsonValue.Create(r.Next(2) == 0);
            case "integer":
                {
                    int lo = (int?)schema["minimum"] ?? -30;
                    int hi = (int?)schema["maximum"] ?? 30;
                    return JsonValue.Create(r.Next(lo - 2, hi + 3));
                }

            case "string":
                {
                    int lo = (int?)schema["minLength"] ?? 0;
                    int hi = (int?)schema["maxLength"] ?? 5;
                    int n = Math.Max(0, r.Next(lo - 1, hi + 2));
                    var sb = new System.Text.StringBuilder();
                    while (sb.Length < n)
                    {
                        sb.Append(Words[r.Next(Words.Length)]);
                    }

                    return JsonValue.Create(sb.ToString()[..n]);
                }

            case "array":
                {
                    int lo = (int?)schema["minItems"] ?? 0;
                    int hi = (int?)schema["maxItems"] ?? 3;
                    int n = Math.Max(0, r.Next(lo - 1, hi + 2));
                    var a = new JsonArray();
                    for (int i = 0; i < n; i++)
                    {
                        a.Add(Near((JsonObject)schema["items"]!, r));
                    }

                    return a;
                }

            default:
                {
                    var o = new JsonObject();
                    var required = ((JsonArray)schema["required"]!).Select(x => (string)x!).ToHashSet();
                    foreach (var (name, sub) in (JsonObject)schema["properties"]!)
                    {
                        bool present = required.Contains(name) ? r.Next(10) != 0 : r.Next(2) == 0;
                        if (present)
                        {
                            o[name] = Near((JsonObject)sub!, r);
                        }
                    }

                    if (r.Next(4) == 0)
                    {
                        o["q" + r.Next(2)] = r.Next(3) == 0 ? JsonValue.Create("x") : JsonValue.Create(r.Next(-5, 5));
                    }

                    return o;
                }
        }
    }

    // The family's validator, on the parsed document (System.Text.Json), with the converter's property order.
    private static bool Valid(JsonObject schema, JsonElement v)
    {
        if (schema["enum"] is JsonArray values)
        {
            return v.ValueKind == JsonValueKind.String && values.Any(x => (string)x! == v.GetString());
        }

        var type = schema["type"];
        var types = type is JsonArray list ? list.Select(x => (string)x!).ToList() : [(string)type!];
        return types.Any(t => t switch
        {
            "null" => v.ValueKind == JsonValueKind.Null,
            "boolean" => v.ValueKind is JsonValueKind.True or JsonValueKind.False,
            "integer" => v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n)
                && n >= ((int?)schema["minimum"] ?? long.MinValue) && n <= ((int?)schema["maximum"] ?? long.MaxValue),
            "string" => v.ValueKind == JsonValueKind.String && v.GetString()!.Length >= ((int?)schema["minLength"] ?? 0)
                && v.GetString()!.Length <= ((int?)schema["maxLength"] ?? int.MaxValue),
            "array" => v.ValueKind == JsonValueKind.Array && v.GetArrayLength() >= ((int?)schema["minItems"] ?? 0)
                && v.GetArrayLength() <= ((int?)schema["maxItems"] ?? int.MaxValue)
                && v.EnumerateArray().All(x => Valid((JsonObject)schema["items"]!, x)),
            _ => v.ValueKind == JsonValueKind.Object && ValidObject(schema, v),
        });
    }

    private static bool ValidObject(JsonObject schema, JsonElement v)
    {
        var props = (JsonObject)schema["properties"]!;
        var required = ((JsonArray)schema["required"]!).Select(x => (string)x!).ToList();
        var additional = schema["additionalProperties"] as JsonObject;
        var names = v.EnumerateObject().Select(p => p.Name).ToList();
        if (names.Distinct().Count() != names.Count || !required.All(names.Contains))
        {
            return false;
        }

        // The converter's order: declared properties in schema order (required ones first here), then any others.
        var declared = names.Where(props.ContainsKey).ToList();
        int firstOther = names.FindIndex(n => !props.ContainsKey(n));
        if (firstOther >= 0 && names.Skip(firstOther).Any(props.ContainsKey))
        {
            return false;
        }

        var order = props.Select(p => p.Key).ToList();
        if (!declared.SequenceEqual(declared.OrderBy(order.IndexOf)))
        {
            return false;
        }

        foreach (var p in v.EnumerateObject())
        {
            if (props[p.Name] is JsonObject sub ? !Valid(sub, p.Value) : additional is null || !Valid(additional, p.Value))
            {
                return false;
            }
        }

        return true;
    }

    private static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    [Fact]
    public void AcceptanceAgreesWithParsingAndValidation()
    {
        int validCount = 0;
        int invalidCount = 0;
        Gen.Select(Schema, Gen.Int, Gen.Int[0, 2]).Sample((schema, seed, style) =>
        {
            string grammar = JsonSchemaGrammar.FromSchema(schema.ToJsonString());
            var accepts = JsonSchemaMatching.Matcher(grammar);
            var r = new Random(seed);
            for (int i = 0; i < 12; i++)
            {
                var doc = Near(schema, r);
                string text = style switch
                {
                    0 => doc?.ToJsonString(Compact) ?? "null",
                    1 => doc?.ToJsonString(Indented) ?? "null",
                    _ => (doc?.ToJsonString() ?? "null").Replace(",", ", ", StringComparison.Ordinal).Replace(":", ": ", StringComparison.Ordinal),
                };
                using var parsed = JsonDocument.Parse(text);
                bool valid = Valid(schema, parsed.RootElement);
                Assert.True(valid == accepts(text), $"{schema.ToJsonString()}\n{text}\nvalid: {valid}");
                Interlocked.Increment(ref valid ? ref validCount : ref invalidCount);
            }
        }, iter: 300);

        // Both sides are exercised.
        Assert.True(validCount > 500 && invalidCount > 500, $"{validCount} valid, {invalidCount} invalid documents");
    }
}
