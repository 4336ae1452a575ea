using System.Text.Json;
using KvAdaQuant.Engine;
using Microsoft.AspNetCore.Http;

namespace KvAdaQuant.Cli.Serve;

/// <summary><c>kvaq serve</c>: OpenAI's <c>POST /v1/embeddings</c> (<c>--embeddings</c>).</summary>
internal sealed partial class KvaqServer
{
    // OpenAI's POST /v1/embeddings (kvaq serve --embeddings): per input the final hidden states pooled and scaled to unit
    // length (llama-server's default), run one input after another on a free slot, whose cache then holds the last input.
    private async Task Embeddings(HttpContext c)
    {
        List<List<int>> inputs;
        bool base64;
        EmbeddingPooling pooling;
        try
        {
            pooling = _model.Pooling ?? throw new ServeRequestException(501, "this server does not compute embeddings; start it with --embeddings", null, "not_supported_error");
            using var doc = await ReadBody(c);
            var body = doc.RootElement;
            string field = CompletionRequest.Field(body, "input") is null && CompletionRequest.Field(body, "content") is not null ? "content" : "input";
            var given = CompletionRequest.Field(body, field);
            bool batch = given is { ValueKind: JsonValueKind.Array } a && a.GetArrayLength() > 0 && a[0].ValueKind is JsonValueKind.String or JsonValueKind.Array;
            inputs = [.. CompletionRequest.ParseInputs(body, field).Select((x, i) =>
            {
                string at = batch ? $"{field}[{i}]" : field;
                if (x.Text is { Length: 0 })
                {
                    throw CompletionRequest.Invalid(field, $"{at} is empty; an embedding needs text");
                }

                var tokens = _model.InputTokens(x.Text, x.Ids, field, at);
                return tokens.Count <= _model.Ctx
                    ? tokens
                    : throw CompletionRequest.Invalid(field, $"{at} has {tokens.Count} tokens (BOS included) but the context holds {_model.Ctx} (kvaq serve --ctx)");
            })];
            string format = CompletionRequest.Field(body, "encoding_format") is { } f
                ? f.ValueKind == JsonValueKind.String ? f.GetString()! : throw CompletionRequest.Invalid("encoding_format", $"encoding_format must be \"float\" or \"base64\", got {CompletionRequest.Raw(f)}")
                : "float";
            base64 = format switch
            {
                "float" => false,
                "base64" => true,
                _ => throw CompletionRequest.Invalid("encoding_format", $"encoding_format must be \"float\" or \"base64\", got \"{format}\""),
            };
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
            return;
        }

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(c.RequestAborted, _stopping);
        if (await _model.WaitForSlotAsync(inputs[0], cancel.Token) is not { } slot)
        {
            return;
        }

        try
        {
            var vectors = await Task.Factory.StartNew(
                () => inputs.Select(t =>
                {
                    cancel.Token.ThrowIfCancellationRequested();
                    return slot.Embed(t, pooling);
                }).ToList(),
                cancel.Token,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default);
            int tokens = inputs.Sum(t => t.Count);
            c.Items["kvaq.note"] = $"{vectors.Count} embedding{(vectors.Count == 1 ? string.Empty : "s")} of {tokens} tokens ({pooling.ToString().ToLowerInvariant()} pooling)";
            var usage = new EmbeddingUsage(tokens, tokens);
            if (base64)
            {
                var data = vectors.Select((v, i) => new EmbeddingEntryBase64("embedding", i, Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan())))).ToList();
                await Write(c, 200, new EmbeddingListBase64("list", data, _model.Id, usage), ServeJsonContext.Relaxed.EmbeddingListBase64);
            }
            else
            {
                var data = vectors.Select((v, i) => new EmbeddingEntry("embedding", i, v)).ToList();
                await Write(c, 200, new EmbeddingList("list", data, _model.Id, usage), ServeJsonContext.Relaxed.EmbeddingList);
            }
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // the client left
        }
        finally
        {
            _model.Release(slot);
        }
    }
}
