using System.Globalization;
using System.Text;
using System.Text.Json;
using static KvAdaQuant.Grammar.JsonSchemaGbnfText;

namespace KvAdaQuant.Grammar;

/// <summary>One conversion of a schema document to GBNF (see <see cref="JsonSchemaGrammar"/>).</summary>
internal sealed class JsonSchemaConverter
{
    private const string Quote = "\"\\\"\"";

    /// <summary>The shared rules: body and the rules it names.</summary>
    private static readonly Dictionary<string, (string Body, string[] Uses)> Primitives = new(StringComparer.Ordinal)
    {
        ["space"] = ("""( " " | "\n"{1,2} [ \t]{0,20} )?""", []),
        ["char"] = ("""[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )""", []),
        ["string"] = ("""
            "\"" char* "\"" space
            """, ["char", "space"]),
        ["integral-part"] = ("""
            "0" | [1-9] [0-9]{0,15}
            """, []),
        ["decimal-part"] = ("[0-9]{1,16}", []),
        ["integer"] = ("""
            "-"? integral-part space
            """, ["integral-part", "space"]),
        ["number"] = ("""
            "-"? integral-part ( "." decimal-part )? ( [eE] ( "+" | "-" )? decimal-part )? space
            """, ["integral-part", "decimal-part", "space"]),
        ["boolean"] = ("""( "true" | "false" ) space""", ["space"]),
        ["null"] = ("""
            "null" space
            """, ["space"]),
        ["value"] = ("object | array | string | number | boolean | null", ["object", "array", "string", "number", "boolean", "null"]),
        ["object"] = ("""
            "{" space ( string ":" space value ( "," space string ":" space value )* )? "}" space
            """, ["space", "string", "value"]),
        ["array"] = ("""
            "[" space ( value ( "," space value )* )? "]" space
            """, ["space", "value"]),
        ["date"] = ("""
            [0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )
            """, []),
        ["time"] = ("""
            ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )
            """, []),
        ["date-time"] = ("""
            date "T" time
            """, ["date", "time"]),
        ["date-string"] = ("""
            "\"" date "\"" space
            """, ["date", "space"]),
        ["time-string"] = ("""
            "\"" time "\"" space
            """, ["time", "space"]),
        ["date-time-string"] = ("""
            "\"" date-time "\"" space
            """, ["date-time", "space"]),
        ["uuid"] = ("""
            "\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" space
            """, ["space"]),
    };

    private static readonly Dictionary<string, string> Formats = new(StringComparer.Ordinal)
    {
        ["date"] = "date-string",
        ["time"] = "time-string",
        ["date-time"] = "date-time-string",
        ["uuid"] = "uuid",
    };

    /// <summary>Keywords that do not constrain values (or hold subschemas only reached through <c>$ref</c>).</summary>
    private static readonly HashSet<string> Inert = new(StringComparer.Ordinal)
    {
        "title", "description", "$schema", "$id", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary", "examples", "default",
        "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "$defs", "definitions",
    };

    private static readonly HashSet<string> ObjectKeywords = new(StringComparer.Ordinal) { "properties", "required", "additionalProperties" };
    private static readonly HashSet<string> ArrayKeywords = new(StringComparer.Ordinal) { "items", "prefixItems", "minItems", "maxItems" };
    private static readonly HashSet<string> StringKeywords = new(StringComparer.Ordinal) { "minLength", "maxLength", "pattern", "format" };
    private static readonly HashSet<string> IntegerKeywords = new(StringComparer.Ordinal) { "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum" };
    private static readonly HashSet<string> Structural = new(StringComparer.Ordinal) { "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref" };
    private static readonly string[] TypeNames = ["object", "array", "string", "number", "integer", "boolean", "null"];

    private readonly JsonElement _document;
    private readonly SortedDictionary<string, string> _rules = new(StringComparer.Ordinal);
    private readonly HashSet<string> _taken = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _refRules = new(StringComparer.Ordinal);

    public JsonSchemaConverter(JsonElement document)
    {
        _document = document;
        _taken.UnionWith(Primitives.Keys);
        _taken.Add("root");
    }

    /// <summary>The grammar whose root is one shared rule (<c>value</c>, <c>object</c>).</summary>
    public static string PrimitiveGrammar(string primitive)
    {
        var c = new JsonSchemaConverter(default);
        c._rules["root"] = c.Prim(primitive);
        return c.Format();
    }

    public string Convert()
    {
        _refRules[""] = "root";
        _rules["root"] = Expr(_document, "root", "");
        return Format();
    }

    private string Format()
    {
        var sb = new StringBuilder();
        foreach (var (name, body) in _rules)
        {
            sb.Append(name).Append(" ::= ").Append(body).Append('\n');
        }

        return sb.ToString();
    }

    private string Prim(string name)
    {
        if (!_rules.ContainsKey(name))
        {
            var (body, uses) = Primitives[name];
            _rules[name] = body;
            foreach (string u in uses)
            {
                Prim(u);
            }
        }

        return name;
    }

    private string NewName(string desired)
    {
        string name = SanitizeName(desired);
        if (_taken.Add(name))
        {
            return name;
        }

        for (int i = 1; ; i++)
        {
            string candidate = $"{name}-{i}";
            if (_taken.Add(candidate))
            {
                return candidate;
            }
        }
    }

    /// <summary>A rule name for the schema: a shared rule's name, or a new rule named after <paramref name="desired"/>.</summary>
    private string Ref(JsonElement schema, string desired, string path)
    {
        string body = Expr(schema, desired, path);
        if (IsName(body))
        {
            return body;
        }

        string name = NewName(desired);
        _rules[name] = body;
        return name;
    }

    internal static string Pointer(string path, string key) => path + "/" + key.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private static string Pointer(string path, string key, int index) => Pointer(path, key) + "/" + index.ToString(CultureInfo.InvariantCulture);

    private static JsonSchemaException Refuse(string path, string problem) => new(path, problem);

    private static string Q(string s) => "\"" + JsonEscape(s) + "\"";

    /// <summary>The GBNF expression for values valid under <paramref name="schema"/> (at <paramref name="path"/>).</summary>
    private string Expr(JsonElement schema, string name, string path)
    {
        switch (schema.ValueKind)
        {
            case JsonValueKind.True:
                return Prim("value");
            case JsonValueKind.False:
                throw Refuse(path, "the schema false accepts no value");
            case JsonValueKind.Object:
                break;
            default:
                throw Refuse(path, $"a schema must be an object or a boolean, not {Kind(schema)}");
        }

        var keys = new List<string>();
        foreach (var p in schema.EnumerateObject())
        {
            if (Inert.Contains(p.Name))
            {
                continue;
            }

            if (p.Name == "uniqueItems")
            {
                if (p.Value.ValueKind == JsonValueKind.False)
                {
                    continue;
                }

                throw Refuse(Pointer(path, p.Name), "\"uniqueItems\": true is not supported");
            }

            if (!(Structural.Contains(p.Name) || ObjectKeywords.Contains(p.Name) || ArrayKeywords.Contains(p.Name)
                  || StringKeywords.Contains(p.Name) || IntegerKeywords.Contains(p.Name)))
            {
                throw Refuse(Pointer(path, p.Name), $"{Q(p.Name)} is not supported");
            }

            keys.Add(p.Name);
        }

        if (keys.Contains("$ref"))
        {
            RefuseOthers(keys, "$ref", path, []);
            return RefRule(schema.GetProperty("$ref"), Pointer(path, "$ref"));
        }

        foreach (string alt in (string[])["anyOf", "oneOf"])
        {
            if (keys.Contains(alt))
            {
                RefuseOthers(keys, alt, path, []);
                var members = Members(schema, alt, path);
                var names = new List<string>();
                for (int i = 0; i < members.Count; i++)
                {
                    string r = Ref(members[i], $"{name}-{i}", Pointer(path, alt, i));
                    if (!names.Contains(r))
                    {
                        names.Add(r);
                    }
                }

                return string.Join(" | ", names);
            }
        }

        if (keys.Contains("allOf"))
        {
            return AllOf(schema, name, path, keys);
        }

        var types = Types(schema, path, keys);
        if (keys.Contains("const") || keys.Contains("enum"))
        {
            return Enum(schema, path, keys, types);
        }

        if (types is null)
        {
            return Prim("value");
        }

        foreach (string k in keys)
        {
            if (k == "type")
            {
                continue;
            }

            var family = ObjectKeywords.Contains(k) ? "object" : ArrayKeywords.Contains(k) ? "array" : StringKeywords.Contains(k) ? "string" : null;
            if (family is not null && !types.Contains(family))
            {
                throw Refuse(Pointer(path, k), $"{Q(k)} does not apply to type {TypeList(types)}");
            }

            if (IntegerKeywords.Contains(k))
            {
                if (types.Contains("number"))
                {
                    throw Refuse(Pointer(path, k), $"{Q(k)} is only supported with \"type\": \"integer\", not \"number\"");
                }

                if (!types.Contains("integer"))
                {
                    throw Refuse(Pointer(path, k), $"{Q(k)} does not apply to type {TypeList(types)}");
                }
            }
        }

        var alternatives = new List<string>();
        foreach (string t in types)
        {
            alternatives.Add(t switch
            {
                "object" => ObjectExpr(ObjectSpec.From(schema, path, keys), name, path),
                "array" => ArrayExpr(schema, name, path, keys),
                "string" => StringExpr(schema, path, keys),
                "integer" => IntegerExpr(schema, path, keys),
                "number" => Prim("number"),
                "boolean" => Prim("boolean"),
                _ => Prim("null"),
            });
        }

        return string.Join(" | ", alternatives);
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.Array => "an array",
        JsonValueKind.Null => "null",
        JsonValueKind.Object => "an object",
        _ => "a boolean",
    };

    private static string TypeList(List<string> types) => types.Count == 1 ? Q(types[0]) : "[" + string.Join(", ", types.Select(Q)) + "]";

    private static void RefuseOthers(List<string> keys, string keyword, string path, string[] allowed)
    {
        foreach (string k in keys)
        {
            if (k != keyword && !allowed.Contains(k))
            {
                throw Refuse(Pointer(path, k), $"{Q(k)} next to {Q(keyword)} is not supported");
            }
        }
    }

    private static List<JsonElement> Members(JsonElement schema, string keyword, string path)
    {
        var e = schema.GetProperty(keyword);
        if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
        {
            throw Refuse(Pointer(path, keyword), $"{Q(keyword)} must be a non-empty array of schemas");
        }

        return [.. e.EnumerateArray()];
    }

    /// <summary>The declared types, or the ones the keywords imply; null when nothing constrains the type.</summary>
    private static List<string>? Types(JsonElement schema, string path, List<string> keys)
    {
        if (schema.TryGetProperty("type", out var t))
        {
            var list = new List<string>();
            if (t.ValueKind == JsonValueKind.String)
            {
                list.Add(t.GetString()!);
            }
            else if (t.ValueKind == JsonValueKind.Array && t.GetArrayLength() > 0)
            {
                foreach (var item in t.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String)
                    {
                        throw Refuse(Pointer(path, "type"), "\"type\" must be a type name or a non-empty array of them");
                    }

                    if (!list.Contains(item.GetString()!))
                    {
                        list.Add(item.GetString()!);
                    }
                }
            }
            else
            {
                throw Refuse(Pointer(path, "type"), "\"type\" must be a type name or a non-empty array of them");
            }

            foreach (string name in list)
            {
                if (!TypeNames.Contains(name))
                {
                    throw Refuse(Pointer(path, "type"), $"unknown type {Q(name)}");
                }
            }

            return list;
        }

        if (keys.Contains("const") || keys.Contains("enum"))
        {
            return null;
        }

        var inferred = new List<string>();
        if (keys.Any(ObjectKeywords.Contains))
        {
            inferred.Add("object");
        }

        if (keys.Any(ArrayKeywords.Contains))
        {
            inferred.Add("array");
        }

        if (keys.Any(StringKeywords.Contains))
        {
            inferred.Add("string");
        }

        if (keys.Any(IntegerKeywords.Contains))
        {
            inferred.Add("number");
        }

        return inferred.Count == 0 ? null : inferred;
    }

    private string Enum(JsonElement schema, string path, List<string> keys, List<string>? types)
    {
        string keyword = keys.Contains("const") ? "const" : "enum";
        RefuseOthers(keys, keyword, path, ["type"]);
        List<JsonElement> values;
        if (keyword == "const")
        {
            values = [schema.GetProperty("const")];
        }
        else
        {
            var e = schema.GetProperty("enum");
            if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
            {
                throw Refuse(Pointer(path, "enum"), "\"enum\" must be a non-empty array");
            }

            values = [.. e.EnumerateArray()];
        }

        var alternatives = new List<string>();
        foreach (var v in values)
        {
            if (types is not null && !types.Any(t => HasType(v, t)))
            {
                continue;
            }

            string expr = ConstExpr(v);
            if (!alternatives.Contains(expr))
            {
                alternatives.Add(expr);
            }
        }

        if (alternatives.Count == 0)
        {
            throw Refuse(Pointer(path, keyword), $"no value of {Q(keyword)} has type {TypeList(types!)}");
        }

        return string.Join(" | ", alternatives);
    }

    private static bool HasType(JsonElement v, string type) => type switch
    {
        "object" => v.ValueKind == JsonValueKind.Object,
        "array" => v.ValueKind == JsonValueKind.Array,
        "string" => v.ValueKind == JsonValueKind.String,
        "number" => v.ValueKind == JsonValueKind.Number,
        "integer" => v.ValueKind == JsonValueKind.Number && v.TryGetDecimal(out decimal d) && decimal.Truncate(d) == d,
        "boolean" => v.ValueKind is JsonValueKind.True or JsonValueKind.False,
        _ => v.ValueKind == JsonValueKind.Null,
    };

    /// <summary>Exactly one JSON value (in its compact spelling, with the usual whitespace between tokens).</summary>
    private string ConstExpr(JsonElement v)
    {
        string space = Prim("space");
        switch (v.ValueKind)
        {
            case JsonValueKind.String:
                return Literal(Q(v.GetString()!)) + " " + space;
            case JsonValueKind.Object:
                {
                    var parts = v.EnumerateObject().Select(p => Literal(Q(p.Name)) + $" {space} \":\" {space} " + ConstExpr(p.Value)).ToList();
                    return $"\"{{\" {space} " + string.Join($" \",\" {space} ", parts) + (parts.Count > 0 ? " " : "") + $"\"}}\" {space}";
                }

            case JsonValueKind.Array:
                {
                    var parts = v.EnumerateArray().Select(ConstExpr).ToList();
                    return $"\"[\" {space} " + string.Join($" \",\" {space} ", parts) + (parts.Count > 0 ? " " : "") + $"\"]\" {space}";
                }

            default:
                return Literal(v.GetRawText()) + " " + space;
        }
    }

    private string RefRule(JsonElement reference, string refPath)
    {
        var (target, pointer) = Resolve(reference, refPath);
        if (_refRules.TryGetValue(pointer, out string? known))
        {
            return known;
        }

        int slash = pointer.LastIndexOf('/');
        string last = pointer[(slash + 1)..].Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
        string name = NewName(last);
        _refRules[pointer] = name;
        _rules[name] = "";
        _rules[name] = Expr(target, name, pointer);
        return name;
    }

    /// <summary>The schema a local <c>$ref</c> points to, and its JSON Pointer.</summary>
    private (JsonElement Target, string Pointer) Resolve(JsonElement reference, string refPath)
    {
        if (reference.ValueKind != JsonValueKind.String)
        {
            throw Refuse(refPath, "\"$ref\" must be a string");
        }

        string text = reference.GetString()!;
        if (!text.StartsWith('#'))
        {
            throw Refuse(refPath, $"\"$ref\": {Q(text)} is not supported (only references inside the document, \"#/...\")");
        }

        string pointer = Uri.UnescapeDataString(text[1..]);
        if (pointer.Length > 0 && pointer[0] != '/')
        {
            throw Refuse(refPath, $"\"$ref\": {Q(text)} is not supported (anchors are not; use a JSON Pointer, \"#/$defs/...\")");
        }

        var current = _document;
        if (pointer.Length > 0)
        {
            foreach (string raw in pointer[1..].Split('/'))
            {
                string segment = raw.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
                if (current.ValueKind == JsonValueKind.Object && current.TryGetProperty(segment, out var next))
                {
                    current = next;
                }
                else if (current.ValueKind == JsonValueKind.Array && int.TryParse(segment, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < current.GetArrayLength())
                {
                    current = current[i];
                }
                else
                {
                    throw Refuse(refPath, $"\"$ref\": {Q(text)} points to nothing in the document");
                }
            }
        }

        return (current, pointer);
    }

    private string AllOf(JsonElement schema, string name, string path, List<string> keys)
    {
        var members = Members(schema, "allOf", path);
        if (members.Count == 1 && keys.Count == 1)
        {
            return Expr(members[0], name, Pointer(path, "allOf", 0));
        }

        var spec = new ObjectSpec();
        Merge(spec, schema, path, 0);
        return ObjectExpr(spec, name, path);
    }

    /// <summary>Adds an object schema (and its own <c>allOf</c> members, and what its <c>$ref</c> points to) to a merged object.</summary>
    private void Merge(ObjectSpec spec, JsonElement schema, string path, int depth)
    {
        if (depth > 64)
        {
            throw Refuse(path, "\"allOf\" / \"$ref\" nest too deep");
        }

        if (schema.ValueKind == JsonValueKind.True)
        {
            return;
        }

        if (schema.ValueKind != JsonValueKind.Object)
        {
            throw Refuse(path, "\"allOf\" is only supported for object schemas (this member is not one)");
        }

        foreach (var p in schema.EnumerateObject())
        {
            string k = p.Name;
            string at = Pointer(path, k);
            if (Inert.Contains(k) || k == "properties" || k == "required" || k == "allOf")
            {
                continue;
            }

            if (k == "type" && p.Value.ValueKind == JsonValueKind.String && p.Value.GetString() == "object")
            {
                continue;
            }

            if (k == "additionalProperties" && p.Value.ValueKind == JsonValueKind.False)
            {
                continue;
            }

            if (k == "$ref")
            {
                var (target, pointer) = Resolve(p.Value, at);
                Merge(spec, target, pointer, depth + 1);
                continue;
            }

            throw Refuse(at, k == "additionalProperties"
                ? "\"additionalProperties\" other than false is not supported with \"allOf\" (the merged object is closed)"
                : $"{Q(k)} is not supported with \"allOf\" (allOf merges object schemas: type, properties, required)");
        }

        spec.Add(schema, path);
        if (schema.TryGetProperty("allOf", out _))
        {
            var members = Members(schema, "allOf", path);
            for (int i = 0; i < members.Count; i++)
            {
                Merge(spec, members[i], Pointer(path, "allOf", i), depth + 1);
            }
        }
    }

    private string ObjectExpr(ObjectSpec spec, string name, string path)
    {
        string space = Prim("space");
        if (spec.Properties.Count == 0 && spec.Required.Count == 0 && (spec.Additional is null || spec.Additional.Value.ValueKind == JsonValueKind.True))
        {
            return Prim("object");
        }

        bool closed = spec.Additional is null || spec.Additional.Value.ValueKind == JsonValueKind.False;
        string? additionalValue = closed ? null : Ref(spec.Additional!.Value, $"{name}-additional-value", spec.AdditionalPath);

        var required = new List<string>();
        var optional = new List<(string Kv, bool Many)>();
        var declared = spec.Properties.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (bool wantRequired in (bool[])[true, false])
        {
            foreach (var (prop, propSchema, propPath) in spec.Properties)
            {
                bool isRequired = spec.Required.Contains(prop);
                if (isRequired != wantRequired)
                {
                    continue;
                }

                if (propSchema.ValueKind == JsonValueKind.False)
                {
                    if (isRequired)
                    {
                        throw Refuse(propPath, $"required property {Q(prop)} has the schema false");
                    }

                    continue;
                }

                string value = Ref(propSchema, $"{name}-{prop}", propPath);
                string kv = NewName($"{name}-{prop}-kv");
                _rules[kv] = $"{Literal(Q(prop))} {space} \":\" {space} {value}";
                if (isRequired)
                {
                    required.Add(kv);
                }
                else
                {
                    optional.Add((kv, false));
                }
            }

            if (wantRequired)
            {
                foreach (string prop in spec.Required)
                {
                    if (declared.Contains(prop))
                    {
                        continue;
                    }

                    if (spec.Additional is { ValueKind: JsonValueKind.False })
                    {
                        throw Refuse(spec.RequiredPath, $"required property {Q(prop)} is not allowed by \"additionalProperties\": false");
                    }

                    string kv = NewName($"{name}-{prop}-kv");
                    _rules[kv] = $"{Literal(Q(prop))} {space} \":\" {space} {additionalValue ?? Prim("value")}";
                    required.Add(kv);
                }
            }
        }

        if (additionalValue is not null)
        {
            string key = spec.Properties.Count == 0 && spec.Required.Count == 0 ? Prim("string") : NotNames(declared.Concat(spec.Required), name);
            string kv = NewName($"{name}-additional-kv");
            _rules[kv] = $"{key} \":\" {space} {additionalValue}";
            optional.Add((kv, true));
        }

        var sb = new StringBuilder($"\"{{\" {space}");
        if (required.Count > 0)
        {
            sb.Append(' ').Append(string.Join($" \",\" {space} ", required));
            foreach (var (kv, many) in optional)
            {
                sb.Append($" ( \",\" {space} {kv} )").Append(many ? '*' : '?');
            }
        }
        else if (optional.Count > 0)
        {
            var alternatives = new List<string>();
            for (int i = 0; i < optional.Count; i++)
            {
                var alt = new StringBuilder(optional[i].Kv);
                for (int j = i; j < optional.Count; j++)
                {
                    if (j == i && !optional[j].Many)
                    {
                        continue;
                    }

                    alt.Append($" ( \",\" {space} {optional[j].Kv} )").Append(optional[j].Many ? '*' : '?');
                }

                alternatives.Add(alt.ToString());
            }

            sb.Append(" ( ").Append(string.Join(" | ", alternatives)).Append(" )?");
        }

        return sb.Append($" \"}}\" {space}").ToString();
    }

    /// <summary>A rule for JSON object keys other than <paramref name="names"/> (quotes and trailing space included).</summary>
    private string NotNames(IEnumerable<string> names, string name)
    {
        var root = new TrieNode();
        foreach (string n in names)
        {
            var node = root;
            foreach (char c in JsonEscape(n))
            {
                if (!node.Children.TryGetValue(c, out var child))
                {
                    child = new TrieNode();
                    node.Children[c] = child;
                }

                node = child;
            }

            node.IsEnd = true;
        }

        string ch = Prim("char");
        string Continuation(TrieNode node)
        {
            var alternatives = new List<string>();
            var excluded = new StringBuilder();
            foreach (var (c, child) in node.Children)
            {
                alternatives.Add(Literal(c.ToString()) + " " + Continuation(child));
                excluded.Append(ClassChar(c));
            }

            alternatives.Add($"[^{excluded}\"\\\\\\x00-\\x1F] {ch}*");
            return "( " + string.Join(" | ", alternatives) + (node.IsEnd ? " )" : " )?");
        }

        string rule = NewName($"{name}-additional-key");
        _rules[rule] = $"{Quote} {Continuation(root)} {Quote} {Prim("space")}";
        return rule;
    }

    private sealed class TrieNode
    {
        public SortedDictionary<char, TrieNode> Children { get; } = [];

        public bool IsEnd { get; set; }
    }

    private string ArrayExpr(JsonElement schema, string name, string path, List<string> keys)
    {
        string space = Prim("space");
        int min = Count(schema, "minItems", path) ?? 0;
        int? max = Count(schema, "maxItems", path);
        if (max < min)
        {
            throw Refuse(Pointer(path, "maxItems"), "\"maxItems\" is below \"minItems\"");
        }

        var prefix = new List<(JsonElement Schema, string Path)>();
        JsonElement? rest = null;
        string restPath = Pointer(path, "items");
        bool hasItems = schema.TryGetProperty("items", out var items);
        if (schema.TryGetProperty("prefixItems", out var prefixItems))
        {
            if (prefixItems.ValueKind != JsonValueKind.Array)
            {
                throw Refuse(Pointer(path, "prefixItems"), "\"prefixItems\" must be an array of schemas");
            }

            int i = 0;
            foreach (var s in prefixItems.EnumerateArray())
            {
                prefix.Add((s, Pointer(path, "prefixItems", i++)));
            }

            if (hasItems)
            {
                if (items.ValueKind == JsonValueKind.Array)
                {
                    throw Refuse(restPath, "an \"items\" array next to \"prefixItems\" is not supported");
                }

                rest = items.ValueKind == JsonValueKind.False ? null : items;
            }
        }
        else if (hasItems && items.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var s in items.EnumerateArray())
            {
                prefix.Add((s, Pointer(path, "items", i++)));
            }
        }
        else if (hasItems)
        {
            rest = items.ValueKind == JsonValueKind.False ? null : items;
        }
        else if (!keys.Contains("minItems") && !keys.Contains("maxItems"))
        {
            return Prim("array");
        }
        else
        {
            rest = JsonSerializer.SerializeToElement(true);
        }

        int p = prefix.Count;
        if (p > 0 && max < p)
        {
            throw Refuse(Pointer(path, "maxItems"), $"\"maxItems\" below the number of tuple items ({p}) is not supported");
        }

        if (rest is null && min > p)
        {
            throw Refuse(Pointer(path, "minItems"), $"\"minItems\" is {min} but no more than {p} items are allowed");
        }

        var sb = new StringBuilder($"\"[\" {space}");
        string? restRule = rest is null || (max is { } m && m <= p) ? null : Ref(rest.Value, $"{name}-item", restPath);
        if (p > 0)
        {
            for (int i = 0; i < p; i++)
            {
                if (i > 0)
                {
                    sb.Append($" \",\" {space}");
                }

                sb.Append(' ').Append(Ref(prefix[i].Schema, $"{name}-tuple-{i}", prefix[i].Path));
            }

            if (restRule is not null)
            {
                string more = Repeat($"\",\" {space} {restRule}", Math.Max(0, min - p), max - p);
                if (more.Length > 0)
                {
                    sb.Append(' ').Append(more);
                }
            }
        }
        else if (restRule is not null)
        {
            string more = Repeat($"\",\" {space} {restRule}", Math.Max(0, min - 1), max - 1);
            string list = more.Length == 0 ? restRule : $"{restRule} {more}";
            sb.Append(' ').Append(min == 0 ? $"( {list} )?" : list);
        }

        return sb.Append($" \"]\" {space}").ToString();
    }

    /// <summary>A non-negative integer keyword's value, or null when absent.</summary>
    private static int? Count(JsonElement schema, string keyword, string path)
    {
        if (!schema.TryGetProperty(keyword, out var e))
        {
            return null;
        }

        if (e.ValueKind == JsonValueKind.Number && e.TryGetDecimal(out decimal d) && d >= 0 && decimal.Truncate(d) == d && d <= int.MaxValue)
        {
            return (int)d;
        }

        throw Refuse(Pointer(path, keyword), $"{Q(keyword)} must be a non-negative integer");
    }

    private string StringExpr(JsonElement schema, string path, List<string> keys)
    {
        string space = Prim("space");
        if (schema.TryGetProperty("format", out var format))
        {
            RefuseBeside(keys, "format", path, ["minLength", "maxLength", "pattern"]);
            string? f = format.ValueKind == JsonValueKind.String ? format.GetString() : null;
            if (f is null || !Formats.TryGetValue(f, out string? rule))
            {
                throw Refuse(Pointer(path, "format"), $"format {(f is null ? "must be a string" : Q(f) + " is not supported")} (supported: date, time, date-time, uuid)");
            }

            return Prim(rule);
        }

        if (schema.TryGetProperty("pattern", out var pattern))
        {
            RefuseBeside(keys, "pattern", path, ["minLength", "maxLength"]);
            if (pattern.ValueKind != JsonValueKind.String)
            {
                throw Refuse(Pointer(path, "pattern"), "\"pattern\" must be a string");
            }

            string body = JsonSchemaPattern.ToGbnf(pattern.GetString()!, Pointer(path, "pattern"), Prim("char"));
            return body.Length == 0 ? $"{Quote} {Quote} {space}" : $"{Quote} {Group(body)} {Quote} {space}";
        }

        int min = Count(schema, "minLength", path) ?? 0;
        int? max = Count(schema, "maxLength", path);
        if (max < min)
        {
            throw Refuse(Pointer(path, "maxLength"), "\"maxLength\" is below \"minLength\"");
        }

        if (min == 0 && max is null)
        {
            return Prim("string");
        }

        string chars = Repeat(Prim("char"), min, max);
        return chars.Length == 0 ? $"{Quote} {Quote} {space}" : $"{Quote} {chars} {Quote} {space}";
    }

    private static void RefuseBeside(List<string> keys, string keyword, string path, string[] others)
    {
        foreach (string k in others)
        {
            if (keys.Contains(k))
            {
                throw Refuse(Pointer(path, k), $"{Q(k)} next to {Q(keyword)} is not supported");
            }
        }
    }

    private string IntegerExpr(JsonElement schema, string path, List<string> keys)
    {
        decimal? lo = null;
        decimal? hi = null;
        foreach (string k in (string[])["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"])
        {
            if (!keys.Contains(k))
            {
                continue;
            }

            var e = schema.GetProperty(k);
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDecimal(out decimal v))
            {
                throw Refuse(Pointer(path, k), $"{Q(k)} must be a number" + (e.ValueKind is JsonValueKind.True or JsonValueKind.False ? " (the draft-4 boolean form is not supported)" : ""));
            }

            switch (k)
            {
                case "minimum": lo = Max(lo, decimal.Ceiling(v)); break;
                case "exclusiveMinimum": lo = Max(lo, decimal.Floor(v) + 1); break;
                case "maximum": hi = Min(hi, decimal.Floor(v)); break;
                default: hi = Min(hi, decimal.Ceiling(v) - 1); break;
            }
        }

        if (lo is null && hi is null)
        {
            return Prim("integer");
        }

        const decimal cap = JsonSchemaIntegerRange.Cap;
        if (lo > cap || hi < -cap)
        {
            throw Refuse(path, $"no integer of at most {JsonSchemaIntegerRange.MaxDigits} digits satisfies the bounds");
        }

        long? min = lo is null || lo < -cap ? null : (long)lo.Value;
        long? max = hi is null || hi > cap ? null : (long)hi.Value;
        string? expr = JsonSchemaIntegerRange.Expression(min, max) ?? throw Refuse(path, "no integer lies between the minimum and the maximum");
        return $"{Group(expr)} {Prim("space")}";
    }

    private static decimal Max(decimal? a, decimal b) => a is null ? b : Math.Max(a.Value, b);

    private static decimal Min(decimal? a, decimal b) => a is null ? b : Math.Min(a.Value, b);

    /// <summary>An object schema's properties, required names and additional-properties schema (merged across <c>allOf</c>).</summary>
    private sealed class ObjectSpec
    {
        public List<(string Name, JsonElement Schema, string Path)> Properties { get; } = [];

        public List<string> Required { get; } = [];

        public string RequiredPath { get; private set; } = "";

        public JsonElement? Additional { get; private set; }

        public string AdditionalPath { get; private set; } = "";

        public static ObjectSpec From(JsonElement schema, string path, List<string> keys)
        {
            var spec = new ObjectSpec();
            spec.Add(schema, path);
            if (keys.Contains("additionalProperties"))
            {
                spec.Additional = schema.GetProperty("additionalProperties");
                spec.AdditionalPath = Pointer(path, "additionalProperties");
            }

            return spec;
        }

        /// <summary>Adds the schema's <c>properties</c> and <c>required</c>.</summary>
        public void Add(JsonElement schema, string path)
        {
            if (schema.TryGetProperty("properties", out var props))
            {
                if (props.ValueKind != JsonValueKind.Object)
                {
                    throw Refuse(Pointer(path, "properties"), "\"properties\" must be an object");
                }

                foreach (var p in props.EnumerateObject())
                {
                    string at = Pointer(Pointer(path, "properties"), p.Name);
                    int existing = Properties.FindIndex(x => x.Name == p.Name);
                    if (existing >= 0)
                    {
                        if (Properties[existing].Schema.GetRawText() != p.Value.GetRawText())
                        {
                            throw Refuse(at, $"property {Q(p.Name)} is declared differently by more than one \"allOf\" member");
                        }

                        continue;
                    }

                    Properties.Add((p.Name, p.Value, at));
                }
            }

            if (schema.TryGetProperty("required", out var req))
            {
                RequiredPath = Pointer(path, "required");
                if (req.ValueKind != JsonValueKind.Array || req.EnumerateArray().Any(r => r.ValueKind != JsonValueKind.String))
                {
                    throw Refuse(RequiredPath, "\"required\" must be an array of strings");
                }

                foreach (var r in req.EnumerateArray())
                {
                    if (!Required.Contains(r.GetString()!))
                    {
                        Required.Add(r.GetString()!);
                    }
                }
            }
        }
    }
}
