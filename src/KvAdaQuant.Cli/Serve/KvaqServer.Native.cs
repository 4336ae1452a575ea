using System.Text.Json;
using System.Threading.Channels;
using KvAdaQuant.Engine;
using Microsoft.AspNetCore.Http;

namespace KvAdaQuant.Cli.Serve;

/// <summary><c>kvaq serve</c>: llama-server's own <c>POST /completion</c> and <c>POST /apply-template</c>.</summary>
internal sealed partial class KvaqServer
{
    // llama-server's POST /apply-template: the prompt text /v1/chat/completions would run for these messages (the
    // template's rendering with the generation prompt, and the tools offered by tools/tool_choice in the model's tool format;
    // BOS is added when it is tokenized, not written here).
    private async Task ApplyTemplate(HttpContext c)
    {
        try
        {
            using var doc = await ReadBody(c);
            var messages = CompletionRequest.ParseMessages(doc.RootElement);
            var (tools, choice, parallel) = CompletionRequest.ParseTools(doc.RootElement);
            var request = _model.WithTools(_model.Defaults with { Messages = messages, Tools = tools, ToolChoice = choice, ParallelToolCalls = parallel });
            await Write(c, 200, new ApplyTemplateResponse(_model.RenderChat(request)), ServeJsonContext.Relaxed.ApplyTemplateResponse);
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
        }
    }

    // llama-server's own POST /completion (and /completions): one completion of a prompt, its answer or a stream of
    // {"content", "stop": false} pieces ended by the whole answer with "stop": true (no [DONE]), in llama-server's fields.
    private async Task NativeComplete(HttpContext c)
    {
        CompletionRequest request;
        List<int> prompt;
        int wanted;
        try
        {
            using var doc = await ReadBody(c);
            (request, wanted) = CompletionRequest.ParseNative(doc.RootElement, _model.Defaults, _model.Slots);
            prompt = PromptTokens(request, chat: false);
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
            return;
        }

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(c.RequestAborted, _stopping);
        var metrics = _model.Metrics;
        metrics?.Queued();
        if (await _model.WaitForSlotAsync(prompt, cancel.Token, wanted) is not { } slot)
        {
            metrics?.Left();
            return; // the client left (or the server stops) while queued
        }

        metrics?.Started();
        try
        {
            int id = _model.SlotId(slot);
            string promptText = request.Prompt ?? _model.Tokenizer.Decode(prompt);
            if (!request.Stream)
            {
                var run = await Task.Factory.StartNew(() => _model.Generate(slot, prompt, request, null, cancel.Token), cancel.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                metrics?.Record(run.Result);
                Note(c, [run.Result], run.FinishReason, run.CachedTokens);
                if (run.FinishReason != "cancelled")
                {
                    await Write(c, 200, Native(run.Result, run.Text, run.CachedTokens, request, promptText, id, slot), ServeJsonContext.Relaxed.NativeCompletion);
                }

                return;
            }

            c.Response.StatusCode = 200;
            c.Response.ContentType = "text/event-stream";
            c.Response.Headers.CacheControl = "no-cache";
            var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            var generation = Task.Factory.StartNew(
                () =>
                {
                    try
                    {
                        return _model.Generate(slot, prompt, request, (text, _) => pieces.Writer.TryWrite(text), cancel.Token);
                    }
                    finally
                    {
                        pieces.Writer.TryComplete();
                    }
                },
                CancellationToken.None,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default);
            try
            {
                await foreach (string piece in pieces.Reader.ReadAllAsync(cancel.Token))
                {
                    if (piece.Length > 0)
                    {
                        await Event(c, JsonSerializer.SerializeToUtf8Bytes(new NativeChunk(0, piece, false, id, prompt.Count), ServeJsonContext.Relaxed.NativeChunk), cancel.Token);
                    }
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
                await cancel.CancelAsync(); // the client left: stop generating
            }

            var done = await generation;
            metrics?.Record(done.Result);
            Note(c, [done.Result], done.FinishReason, done.CachedTokens);
            if (done.FinishReason != "cancelled")
            {
                await Event(c, JsonSerializer.SerializeToUtf8Bytes(Native(done.Result, string.Empty, done.CachedTokens, request, promptText, id, slot), ServeJsonContext.Relaxed.NativeCompletion), cancel.Token);
            }
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // the client left: nothing to answer
        }
        finally
        {
            _model.Release(slot);
            metrics?.Finished();
        }
    }

    // The whole /completion answer of a run (content empty for the end of a stream).
    private NativeCompletion Native(GenerationResult r, string content, int cached, CompletionRequest request, string promptText, int id, RequestGenerator slot)
    {
        string stopType = r.StopReason switch
        {
            "eos" or "grammar_dead_end" => "eos",
            "stop_text" => "word",
            "max_tokens" or "context_full" => "limit",
            _ => "none",
        };

        // The stop text that ended it: the one found first in the generated text (the filter's rule).
        string word = string.Empty;
        if (stopType == "word")
        {
            int first = int.MaxValue;
            foreach (var stop in request.Stop)
            {
                int at = r.Text.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && at < first)
                {
                    (first, word) = (at, stop);
                }
            }
        }

        static double PerToken(double seconds, int n) => n > 0 ? 1000 * seconds / n : 0;
        static double PerSecond(double seconds, int n) => n > 0 && seconds > 0 ? n / seconds : 0;
        var timings = new NativeTimings(
            r.PrefillTokens,
            1000 * r.PrefillSeconds,
            PerToken(r.PrefillSeconds, r.PrefillTokens),
            PerSecond(r.PrefillSeconds, r.PrefillTokens),
            r.Tokens.Count,
            1000 * r.DecodeSeconds,
            PerToken(r.DecodeSeconds, r.Tokens.Count),
            PerSecond(r.DecodeSeconds, r.Tokens.Count),
            r.Speculation?.Drafted,
            r.Speculation?.Accepted);
        var settings = NativeSettings.Of(request, _model.Ctx, _model.Id, request.Stream, request.CachePrompt);
        return new NativeCompletion(
            0, content, id, true, _model.Id, r.Tokens.Count, r.PromptTokens.Count, settings, promptText, content.Contains('\n', StringComparison.Ordinal), false,
            stopType, word, slot.Tokens.Count, timings, Stats(r, cached));
    }
}
