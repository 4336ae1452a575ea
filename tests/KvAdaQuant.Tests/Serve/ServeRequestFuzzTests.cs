using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;

namespace KvAdaQuant.Tests.Serve;

/// <summary>One <c>kvaq serve</c> of stories260K for the request fuzzing: 256 positions, `--parallel 2`, slot files allowed.</summary>
public sealed class Stories260KFuzzServer : IDisposable
{
    public Stories260KFuzzServer()
    {
        Server = new("-m", "stories260K", "--ctx", "256", "--threads", "1", "--parallel", "2", "--slot-save-path", SlotDir.Path);
    }

    public TempDir SlotDir { get; } = new();

    public ServeProcess Server { get; }

    public void Dispose()
    {
        Server.Dispose();
        SlotDir.Dispose();
    }
}

/// <summary>One <c>kvaq serve</c> of stories260K with the hermes tool format (512 positions) for the request fuzzing.</summary>
public sealed class Stories260KHermesFuzzServer : IDisposable
{
    public ServeProcess Server { get; } = new("-m", "stories260K", "--ctx", "512", "--threads", "1", "--tool-format", "hermes");

    public void Dispose() => Server.Dispose();
}

/// <summary>
/// Random malformed and odd requests against every POST endpoint of <c>kvaq serve</c> (CsCheck): valid requests with one
/// to three values anywhere in them replaced by values of any JSON type (extreme numbers, empty and long strings, null, arrays, objects,
/// deep nesting), removed, or added among the fields the server reads, and bodies that are not JSON objects. Every answer
/// must be a 2xx or a 4xx/501 in OpenAI's error shape with a message (never the 500 the server gives a bug in itself),
/// streams must end with <c>[DONE]</c>, and the server must log no bug and still answer afterwards.
/// </summary>
public class ServeRequestFuzzTests(Stories260KFuzzServer fixture, Stories260KHermesFuzzServer hermes) : IClassFixture<Stories260KFuzzServer>, IClassFixture<Stories260KHermesFuzzServer>
{
    private static readonly (string Path, string Body)[] Valid =
    [
        ("/v1/chat/completions", """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0.8, "seed": 1}"""),
        ("/v1/chat/completions", """{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 3, "logprobs": true, "top_logprobs": 2, "stop": ["."], "n": 2}"""),
        ("/v1/chat/completions", """{"messages": [{"role": "user", "content": "W?"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}], "tool_choice": "required", "max_tokens": 12}"""),
        ("/v1/completions", """{"prompt": "Once upon", "max_tokens": 4, "logprobs": 2, "echo": true, "top_k": 40, "top_p": 0.9, "min_p": 0.05}"""),
        ("/v1/completions", """{"prompt": "Once upon", "max_tokens": 5, "stream": true, "n": 2, "stop": ["a"], "logprobs": 1, "temperature": 1.0}"""),
        ("/v1/chat/completions", """{"messages": [{"role": "user", "content": "W?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "3"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}], "max_tokens": 8, "stream": true, "logprobs": true, "temperature": 1.0}"""),
        ("/v1/completions", """{"prompt": [1, 403, 407], "max_tokens": 3, "logit_bias": {"13": -100}, "presence_penalty": 0.5, "frequency_penalty": 0.5, "repeat_penalty": 1.1, "repeat_last_n": 16}"""),
        ("/v1/completions", """{"prompt": "A", "max_tokens": 4, "grammar": "root ::= [a-z]+", "dry_multiplier": 0.8, "xtc_probability": 0.5, "xtc_threshold": 0.1, "mirostat": 2, "typical_p": 0.9, "top_n_sigma": 1.5}"""),
        ("/v1/completions", """{"prompt": "A", "max_tokens": 6, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"x": {"type": "string", "maxLength": 3}}}}}}"""),
        ("/completion", """{"prompt": "Once", "n_predict": 4, "cache_prompt": true, "id_slot": 0, "n_probs": 2, "samplers": ["top_k", "temperature"]}"""),
        ("/tokenize", """{"content": "Once upon a time", "add_special": true, "with_pieces": true}"""),
        ("/detokenize", """{"tokens": [1, 403, 407]}"""),
        ("/apply-template", """{"messages": [{"role": "user", "content": "Hi"}]}"""),
        ("/v1/embeddings", """{"input": "Hi"}"""),
        ("/slots/0?action=save", """{"filename": "fuzz.bin"}"""),
        ("/slots/0?action=restore", """{"filename": "fuzz.bin"}"""),
        ("/slots/1?action=erase", "{}"),
    ];

    private static readonly string[] Fields =
    [
        "messages", "prompt", "max_tokens", "max_completion_tokens", "n_predict", "temperature", "top_p", "top_k", "min_p", "typical_p",
        "top_n_sigma", "seed", "n", "stop", "stream", "logprobs", "top_logprobs", "n_probs", "echo", "logit_bias", "presence_penalty",
        "frequency_penalty", "repeat_penalty", "repeat_last_n", "mirostat", "mirostat_tau", "mirostat_eta", "dry_multiplier",
        "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers", "xtc_probability", "xtc_threshold",
        "grammar", "json_schema", "response_format", "tools", "tool_choice", "parallel_tool_calls", "cache_prompt", "id_slot",
        "samplers", "content", "tokens", "input", "encoding_format", "filename", "add_special", "with_pieces", "user",
    ];

    private static readonly string[] Values =
    [
        "0", "-1", "1", "2", "64", "100000", "2147483647", "2147483648", "-2147483649", "9223372036854775807", "1e308", "-1e308",
        "1e-320", "0.5", "-0.5", "1.0000001", "3.4e38", "true", "false", "null", "\"\"", "\"x\"", "\"auto\"", "\"none\"",
        "\"required\"", "\"\\u0000\"", "\"\\ud800\"", "\"<s></s><unk>\"", "\"root ::= x\"", "\"root ::= (\"", "[]", "[[]]", "[1, 2]",
        "[-5]", "[\"a\", 1, null]", "[{}]", "{}", "{\"type\": \"json_object\"}", "{\"type\": \"json_schema\"}", "{\"1\": 1e30}",
        "{\"-1\": 1}", "{\"x\": 1}", "[{\"role\": \"user\"}]", "[{\"role\": \"tool\", \"content\": \"r\"}]",
        "[{\"role\": \"assistant\", \"tool_calls\": [{}]}]", "[{\"type\": \"function\"}]",
        "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"#/x\"}}}}}]",
        "{\"type\": \"function\", \"function\": {\"name\": \"g\"}}", new string('[', 300) + new string(']', 300),
        "\"" + new string('a', 5000) + "\"", "[" + string.Join(",", Enumerable.Repeat("511", 300)) + "]",
    ];

    private static readonly string[] NotObjects = ["", "null", "[]", "\"text\"", "42", "{", "{\"prompt\": ", "{\"messages\": [}", "\u00ff\u00fe", "{}{}"];

    // One request: a valid one with 1-3 changes (a field set to a value, removed, or added), or a body that is no object.
    private static readonly Gen<(string Path, string Body)> Request = Gen.Frequency(
        (9, Gen.Select(Gen.Int[0, Valid.Length - 1], Gen.Select(Gen.Int[0, 2], Gen.Int[0, Fields.Length - 1], Gen.Int[0, Values.Length - 1]).Array[1, 3]).Select((i, changes) =>
        {
            var (path, body) = Valid[i];
            var node = JsonNode.Parse(body)!.AsObject();
            foreach (var (kind, field, value) in changes)
            {
                var keys = node.Select(p => p.Key).ToList();
                switch (kind)
                {
                    case 0 when keys.Count > 0:
                        node.Remove(keys[field % keys.Count]);
                        break;
                    case 1 when keys.Count > 0:
                        {
                            // Any value in the tree (a message's content, a tool's parameters, a stop string, ...).
                            var places = JsonPlaces.Of(node);
                            JsonPlaces.Set(places[field % places.Count], $"@@{value}@@");
                            break;
                        }
                    default:
                        node[Fields[field]] = $"@@{value}@@";
                        break;
                }
            }

            // The values go in as written (a lone surrogate escape, deep nesting), not through JsonNode.
            string json = node.ToJsonString();
            for (int v = 0; v < Values.Length; v++)
            {
                json = json.Replace($"\"@@{v}@@\"", Values[v], StringComparison.Ordinal);
            }

            return (path, json);
        })),
        (1, Gen.Select(Gen.Int[0, Valid.Length - 1], Gen.Int[0, NotObjects.Length - 1]).Select((i, b) => (Valid[i].Path, NotObjects[b]))));
    [Fact]
    public void A_max_tokens_of_int_max_with_penalties_generates_to_the_context()
    {
        // Was a 500: the sequence kept for the penalties was sized prompt + max_tokens, which overflowed (found by the fuzzing below).
        var (status, body) = fixture.Server.Post("/v1/completions", """{"prompt": [1, 403, 407], "max_tokens": 2147483647, "repeat_penalty": 1.1, "seed": 1, "temperature": 1.0}""");
        Assert.Equal(200, status);
        Assert.Contains(body.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), (string[])["stop", "length"]);
    }

    [Fact]
    public void Random_requests_get_an_answer_or_a_clear_error_never_a_server_bug() => Fuzz(fixture.Server, Request, 600);

    // The chat requests with tools, streamed or not, on a server whose replies are read as hermes (text, then calls).
    private static readonly Gen<(string Path, string Body)> ToolRequest = Request.Where(r => r.Body.Contains("\"tools\"", StringComparison.Ordinal));

    [Fact]
    public void Random_tool_requests_in_the_hermes_format_get_an_answer_or_a_clear_error() => Fuzz(hermes.Server, ToolRequest, 150);

    private static void Fuzz(ServeProcess server, Gen<(string Path, string Body)> requests, int iterations)
    {
        requests.Sample(req =>
        {
            var (path, body) = req;
            using var message = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = server.Client.Send(message);
            int status = (int)response.StatusCode;
            string text = new StreamReader(response.Content.ReadAsStream(), Encoding.UTF8).ReadToEnd();
            string what = $"POST {path} {(body.Length > 300 ? body[..300] + "..." : body)} -> {status} {(text.Length > 400 ? text[..400] : text)}";
            if (status is < 200 or (>= 300 and < 400) or (>= 500 and not 501))
            {
                throw new Xunit.Sdk.XunitException(what);
            }

            if (response.Content.Headers.ContentType?.MediaType == "text/event-stream")
            {
                // A stream: its events, each JSON, the last [DONE] (or an error event in OpenAI's shape, sent before it).
                if (!text.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal) || text.Contains("server_error", StringComparison.Ordinal))
                {
                    throw new Xunit.Sdk.XunitException(what);
                }

                return;
            }

            using var doc = JsonDocument.Parse(text);
            if (status >= 400 && !(doc.RootElement.TryGetProperty("error", out var error)
                && error.TryGetProperty("message", out var m) && m.GetString() is { Length: > 0 }))
            {
                throw new Xunit.Sdk.XunitException("an error without a message: " + what);
            }
        }, iter: iterations, threads: 1);

        Assert.DoesNotContain("a bug in kvaq", server.Stderr, StringComparison.Ordinal);
        Assert.Equal(200, server.Get("/health").Status);
    }
}
