using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace KvAdaQuant.Engine;

/// <summary>The calls begun in a reply still being written (<see cref="ChatToolFormat.ParsePartial"/>).</summary>
/// <param name="Content">The text before the first call as <see cref="ChatToolFormat.Parse"/> keeps it (trimmed; null: none).</param>
/// <param name="Calls">Each call whose name is written (and one of the tools) and whose arguments object has begun: its name and its arguments so far.</param>
public sealed record ChatToolPartialReply(string? Content, IReadOnlyList<(string Name, string Arguments)> Calls);

public sealed partial class ChatToolFormat
{
    /// <summary>
    /// The calls of <paramref name="text"/>, a reply cut anywhere (the model still writing it), as far as they are written:
    /// for each call in the format's syntax whose name is complete (and one of <paramref name="tools"/>, any when empty) and
    /// whose arguments object has begun, the arguments so far as compact JSON, up to the last complete JSON token. Those
    /// are a prefix of the arguments <see cref="Parse"/> gives once the reply is whole and is the same calls: strings are
    /// re-escaped and numbers kept as written, as it does, and a string, number or literal appears only once complete. Stops
    /// at the first place that is not a call (text after a Llama 3 or generic call, a name not among the tools, arguments
    /// that are not an object); what was found before stays.
    /// </summary>
    public ChatToolPartialReply ParsePartial(string text, IReadOnlyList<ChatTool> tools)
    {
        ArgumentNullException.ThrowIfNull(text);
        var known = tools.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var calls = new List<(string Name, string Arguments)>();
        switch (Name)
        {
            case "hermes":
                {
                    int open = text.IndexOf("<tool_call>", StringComparison.Ordinal);
                    string? content = open < 0 ? null : text[..open].Trim();
                    while (open >= 0)
                    {
                        int start = open + "<tool_call>".Length;
                        int close = text.IndexOf("</tool_call>", start, StringComparison.Ordinal);
                        string body = text[start..(close < 0 ? text.Length : close)].TrimStart();
                        if (!ReadPartial(body, generic: false, "arguments", "parameters", known, calls) || close < 0)
                        {
                            break;
                        }

                        open = text.IndexOf("<tool_call>", close, StringComparison.Ordinal);
                    }

                    return new ChatToolPartialReply(content is { Length: > 0 } ? content : null, calls);
                }

            case "llama3":
                {
                    string body = text.TrimStart();
                    body = body.StartsWith("<|python_tag|>", StringComparison.Ordinal) ? body["<|python_tag|>".Length..].TrimStart() : body;
                    _ = ReadPartial(body, generic: false, "parameters", "arguments", known, calls);
                    return new ChatToolPartialReply(null, calls);
                }

            default:
                _ = ReadPartial(text.TrimStart(), generic: true, "arguments", "parameters", known, calls);
                return new ChatToolPartialReply(null, calls);
        }
    }

    /// <summary>
    /// Whether a reply that begins with <paramref name="text"/> is text whatever follows (<see cref="Parse"/> will give it
    /// whole as the content, no calls), so it may be streamed as it comes: <see cref="Llama3"/> and <see cref="Generic"/>,
    /// once its first character other than whitespace is not <c>{</c> (for Llama 3, after a leading
    /// <c>&lt;|python_tag|&gt;</c>); never for <see cref="Hermes"/>, where a call may follow any text.
    /// </summary>
    public bool IsTextWhateverFollows(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (this == Hermes)
        {
            return false;
        }

        string t = text.TrimStart();
        if (this == Llama3)
        {
            const string tag = "<|python_tag|>";
            if (t.StartsWith(tag, StringComparison.Ordinal))
            {
                t = t[tag.Length..].TrimStart();
            }
            else if (tag.StartsWith(t, StringComparison.Ordinal))
            {
                return false; // the tag may be coming
            }
        }

        return t.Length > 0 && t[0] != '{';
    }

    /// <summary>
    /// The content of a reply that begins with <paramref name="text"/>, as far as it is known while the reply is still
    /// being written, so it can be streamed as it comes; null while nothing is. A prefix of the content
    /// <see cref="Parse"/> gives once the reply is whole, whatever follows, except where calls follow (Hermes): the content
    /// is then trimmed, so it begins with this text trimmed at the start.
    /// <list type="bullet">
    /// <item>Text whatever follows (<see cref="IsTextWhateverFollows"/>): all of it.</item>
    /// <item><see cref="Hermes"/>: the text before the first <c>&lt;tool_call&gt;</c>, less an end that may be the
    /// start of one (<c>&lt;</c>, <c>&lt;tool</c>, ...) and less whitespace at its end (which a call would trim).</item>
    /// <item><see cref="Generic"/>: the string of <c>{"response": "..."}</c> decoded as far as it is written (the
    /// "a call or a response" grammar of <c>auto</c> closes the object, so nothing can follow the string but its end).</item>
    /// </list>
    /// </summary>
    public string? ContentSoFar(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (IsTextWhateverFollows(text))
        {
            return text;
        }

        if (this == Hermes)
        {
            const string open = "<tool_call>";
            int end = text.IndexOf(open, StringComparison.Ordinal);
            if (end < 0)
            {
                end = text.Length;
                for (int n = Math.Min(open.Length - 1, text.Length); n > 0; n--)
                {
                    if (text.AsSpan(text.Length - n).SequenceEqual(open.AsSpan(0, n)))
                    {
                        end = text.Length - n;
                        break;
                    }
                }
            }

            string before = text[..end].TrimEnd();
            return before.Length > 0 ? before : null;
        }

        return this == Generic ? GenericResponseSoFar(text, out _) : null;
    }

    // The decoded string of {"response": "..."} as far as text holds it (an escape not yet whole left out; a lone surrogate
    // escape as U+FFFD), and whether its closing quote came (closed); null when text is not, or not yet, such an object
    // with its string begun.
    private static string? GenericResponseSoFar(string text, out bool closed)
    {
        closed = false;
        int i = 0;
        bool Skip()
        {
            while (i < text.Length && text[i] is ' ' or '\t' or '\n' or '\r')
            {
                i++;
            }

            return i < text.Length;
        }

        bool Take(string word)
        {
            if (!Skip() || !text.AsSpan(i).StartsWith(word, StringComparison.Ordinal))
            {
                return false;
            }

            i += word.Length;
            return true;
        }

        if (!Take("{") || !Take("\"response\"") || !Take(":") || !Take("\""))
        {
            return null;
        }

        var b = new StringBuilder();
        while (i < text.Length)
        {
            char ch = text[i];
            if (ch == '"')
            {
                closed = true;
                break;
            }

            if (ch != '\\')
            {
                b.Append(ch);
                i++;
                continue;
            }

            if (i + 1 >= text.Length)
            {
                break; // an escape not yet whole
            }

            char e = text[i + 1];
            if (e != 'u')
            {
                b.Append(e switch { 'n' => '\n', 't' => '\t', 'r' => '\r', 'b' => '\b', 'f' => '\f', _ => e });
                i += 2;
                continue;
            }

            if (i + 6 > text.Length || !ushort.TryParse(text.AsSpan(i + 2, 4), System.Globalization.NumberStyles.AllowHexSpecifier, null, out ushort unit))
            {
                break;
            }

            if (char.IsHighSurrogate((char)unit))
            {
                // Its low half comes in an escape of its own: both, or neither while the next escape is not whole yet. A
                // high half without its low one (valid JSON, but no text) reads as U+FFFD, as a lone low half does.
                if (i + 12 <= text.Length && text[i + 6] == '\\' && text[i + 7] == 'u'
                    && ushort.TryParse(text.AsSpan(i + 8, 4), System.Globalization.NumberStyles.AllowHexSpecifier, null, out ushort low)
                    && char.IsLowSurrogate((char)low))
                {
                    b.Append((char)unit).Append((char)low);
                    i += 12;
                    continue;
                }

                if (i + 12 > text.Length && "\\u".AsSpan().StartsWith(text.AsSpan(i + 6, Math.Min(2, text.Length - i - 6))))
                {
                    break; // the next escape may be the low half
                }

                b.Append('\uFFFD');
                i += 6;
                continue;
            }

            b.Append(char.IsLowSurrogate((char)unit) ? '\uFFFD' : (char)unit);
            i += 6;
        }

        return b.ToString();
    }

    // The calls of one partial JSON text (generic: {"tool_call": call} or {"tool_calls": [call, ...]}; else the call itself)
    // added to calls; false where the text stops being one (invalid JSON, or a call that is not one), true while it may go on.
    private static bool ReadPartial(string json, bool generic, string arguments, string alternative, HashSet<string> known, List<(string Name, string Arguments)> calls)
    {
        if (!json.StartsWith('{'))
        {
            return json.Length == 0;
        }

        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json), isFinalBlock: false, state: default);
        var stack = new Stack<Part>();
        string? property = null;
        string? name = null;
        ArrayBufferWriter<byte>? buffer = null;
        Utf8JsonWriter? writer = null;
        int argsDepth = 0; // containers open inside the arguments (0: not in them)
        bool argsSeen = false;
        try
        {
            while (reader.Read())
            {
                if (writer is not null)
                {
                    // Inside a call's arguments: copied token by token as compact JSON.
                    switch (reader.TokenType)
                    {
                        case JsonTokenType.PropertyName:
                            writer.WritePropertyName(reader.GetString()!);
                            break;
                        case JsonTokenType.String:
                            writer.WriteStringValue(reader.GetString());
                            break;
                        case JsonTokenType.Number:
                            writer.WriteRawValue(reader.ValueSpan, skipInputValidation: true);
                            break;
                        case JsonTokenType.True or JsonTokenType.False:
                            writer.WriteBooleanValue(reader.TokenType == JsonTokenType.True);
                            break;
                        case JsonTokenType.Null:
                            writer.WriteNullValue();
                            break;
                        case JsonTokenType.StartObject:
                            writer.WriteStartObject();
                            argsDepth++;
                            break;
                        case JsonTokenType.StartArray:
                            writer.WriteStartArray();
                            argsDepth++;
                            break;
                        case JsonTokenType.EndObject:
                            writer.WriteEndObject();
                            argsDepth--;
                            break;
                        case JsonTokenType.EndArray:
                            writer.WriteEndArray();
                            argsDepth--;
                            break;
                    }

                    if (argsDepth == 0)
                    {
                        writer.Flush();
                        calls[^1] = (calls[^1].Name, Encoding.UTF8.GetString(buffer!.WrittenSpan));
                        writer.Dispose();
                        writer = null;
                    }

                    continue;
                }

                var parent = stack.Count == 0 ? Part.None : stack.Peek();
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName:
                        property = reader.GetString();
                        continue;
                    case JsonTokenType.StartObject:
                        {
                            var part = (parent, property) switch
                            {
                                (Part.None, _) => generic ? Part.Wrapper : Part.Call,
                                (Part.Wrapper, "tool_call") => Part.Call,
                                (Part.Calls, _) => Part.Call,
                                (Part.Call, _) when property == arguments || property == alternative => Part.Arguments,
                                _ => Part.Other,
                            };
                            if (part == Part.Call)
                            {
                                name = null;
                                argsSeen = false;
                            }
                            else if (part == Part.Arguments)
                            {
                                if (name is null || argsSeen || (known.Count > 0 && !known.Contains(name)))
                                {
                                    return false; // arguments before the name (not streamed), twice, or of an unknown tool
                                }

                                argsSeen = true;
                                buffer = new ArrayBufferWriter<byte>();
                                writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, SkipValidation = true });
                                writer.WriteStartObject();
                                writer.Flush();
                                argsDepth = 1;
                                calls.Add((name, "{"));
                                continue;
                            }

                            stack.Push(part);
                            break;
                        }

                    case JsonTokenType.StartArray:
                        stack.Push(parent == Part.Wrapper && property == "tool_calls" ? Part.Calls : Part.Other);
                        break;
                    case JsonTokenType.EndObject or JsonTokenType.EndArray:
                        if (stack.Pop() == Part.Call && !argsSeen)
                        {
                            return false; // a call without arguments
                        }

                        if (stack.Count == 0)
                        {
                            return true; // the whole JSON text: what follows is not read here
                        }

                        break;
                    case JsonTokenType.String when parent == Part.Call && property == "name":
                        name = reader.GetString();
                        break;
                    case JsonTokenType.String when parent == Part.Call && (property == arguments || property == alternative):
                        return false; // arguments as a JSON string: read whole only
                    case JsonTokenType.String when parent == Part.Wrapper && property is "tool_call" or "tool_calls":
                        return false;
                }

                property = null; // a value, or a container opened: the next property comes with its name
            }

            if (writer is not null)
            {
                writer.Flush();
                calls[^1] = (calls[^1].Name, Encoding.UTF8.GetString(buffer!.WrittenSpan));
            }

            return true;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            // Not JSON (or a string escaping a lone surrogate, which Parse reads as no call either): what came before stays.
            if (writer is not null)
            {
                writer.Flush();
                calls[^1] = (calls[^1].Name, Encoding.UTF8.GetString(buffer!.WrittenSpan));
            }

            return false;
        }
        finally
        {
            writer?.Dispose();
        }
    }

    private enum Part
    {
        None,
        Wrapper,
        Calls,
        Call,
        Arguments,
        Other,
    }
}
