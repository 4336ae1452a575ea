using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq generate</c>: stream text from a prompt.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var prompt = new Option<string>("--prompt", "-p") { Description = "prompt text (empty: BOS only)", DefaultValueFactory = _ => string.Empty };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "tokens to generate", DefaultValueFactory = _ => 128 };
        var sampling = new SamplingOptions();
        var grammarOptions = new GrammarOptions();
        var stop = new Option<string[]>("--stop")
        {
            Description = "end the generation once its text ends with this (repeatable; transformers' stop_strings)",
            DefaultValueFactory = _ => [],
        };
        var file = new Option<string?>("--file", "-f") { Description = "read the prompt from this UTF-8 text file (instead of --prompt)" };
        var ctx = new Option<int>("--ctx") { Description = "context length (0 = what the run needs: prompt + --max-tokens, at least 256, at most the model's)", DefaultValueFactory = _ => 0 };
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var device = DeviceOptions.Device();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var logprobs = new Option<int?>("--logprobs")
        {
            Description = $"record each generated token's log-probability under the model (softmax of the raw logits) and the N most likely tokens at its position (0..{LogprobOptions.MaxTop}); printed after the text, or as \"logprobs\" with --json",
        };
        var promptCacheOptions = new PromptCacheOptions();
        var speculative = new SpeculativeOptions();
        var ubatch = CommonOptions.Ubatch();
        var cmd = new Command("generate", "Generate text from a prompt, streaming it, then print speed and KV memory.")
        {
            model, tokenizer, prompt, file, maxTokens, stop, ctx, kv, kvPlan, threads, json, device, attnInt8, attnInt8Values, logprobs, ubatch,
        };
        foreach (var o in sampling.All.Concat(grammarOptions.All).Concat(promptCacheOptions.Options).Concat(speculative.All))
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var (promptText, promptOption) = Prompt(r, prompt, file);
            string[] stops = r.GetValue(stop) ?? [];
            if (stops.Any(string.IsNullOrEmpty))
            {
                throw new ArgumentException("--stop: an empty text would end the generation at once");
            }

            var grammar = grammarOptions.Parse(r); // before the model loads: a bad grammar is named at once

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            int n = r.GetValue(maxTokens);
            if (n < 0)
            {
                throw new ArgumentException($"--max-tokens must be >= 0, got {n}");
            }

            int c = r.GetValue(ctx);
            if (c < 0 || c > m.Config.ContextLength)
            {
                throw new ArgumentException($"--ctx must be in 0..{m.Config.ContextLength} (the model's context), got {c}");
            }

            var logprobOptions = LogprobText.Options(r.GetValue(logprobs), "--logprobs");
            var promptCache = PromptCache.From(r, promptCacheOptions);
            var promptIds = tok.Encode(promptText, addBos: true);
            int promptTokens = promptIds.Count;
            if (c == 0)
            {
                // What this run can use, as a dynamic cache would: the prompt and the tokens asked for (256 positions at
                // least), at most the model's context. Allocating the model's whole context (131,072 positions for
                // Llama 3.x) cost gigabytes and tens of seconds before the first token.
                c = (int)Math.Min(m.Config.ContextLength, Math.Max(256L, (long)promptTokens + n));
            }

            // Checked here, before the prompt is echoed to stdout (the generation loop checks too, but only after it).
            if (promptTokens > c)
            {
                throw new ArgumentException($"{promptOption} has {promptTokens} tokens (BOS included) but the context holds {c} (--ctx; the model's context is {m.Config.ContextLength})");
            }

            var precision = CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values));
            bool int8 = precision != KvAdaQuant.KvCache.AttentionPrecision.Fp32;
            if (r.GetValue(device) == DeviceOptions.Cuda)
            {
                if (int8)
                {
                    throw new ArgumentException($"{CommonOptions.AttentionFlag(precision)} selects a CPU attention kernel; it cannot be combined with --device cuda");
                }

                if (promptCache is not null)
                {
                    throw new ArgumentException("--prompt-cache saves and loads the CPU engine's KV cache; it cannot be combined with --device cuda");
                }

                if (speculative.Given(r) is { } specOption)
                {
                    throw new ArgumentException($"{specOption}: speculative decoding runs on the CPU engine; it cannot be combined with --device cuda");
                }

                // A grammar makes the sampler non-basic, so the GPU run samples on the host through Generator (as the
                // penalties do), where the grammar applies.
                return GenerateOnGpu(r, m, tok, c, n, promptText, stops, sampling, grammar, kv, kvPlan, json, logprobOptions, CommonOptions.CheckUbatch(r.GetValue(ubatch)));
            }

            using var transformer = new Transformer(m, r.GetValue(threads));
            var plan = KvCacheFactory.ResolvePlan(r.GetValue(kv), r.GetValue(kvPlan), m.Config.Layers);
            CommonOptions.NoteIfNeverQuantized(plan, c);
            using var session = CommonOptions.Session(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(c), precision), CommonOptions.CheckUbatch(r.GetValue(ubatch)));
            using var speculation = speculative.Create(r, m, r.GetValue(tokenizer), c, r.GetValue(threads));
            if (speculation is not null)
            {
                SpeculativeOptions.Check(session, r.GetValue(kvPlan) is null ? "--kv" : "--kv-plan");
            }

            int reused = promptCache?.Restore(session, promptIds) ?? 0;
            var constraint = grammar is null ? null : new GrammarConstraint(grammar, tok);
            var sampler = sampling.Create(r, constraint, tok);
            sampler.CheckVocabulary(m.Config.VocabSize);
            bool asJson = r.GetValue(json);
            var gen = new Generator(session, tok) { Speculative = speculation?.Settings };
            var p = promptText;
            if (!asJson)
            {
                Console.Out.Write(p);
            }

            string? cacheNote = promptCache?.NotSaved();
            Action? afterPrefill = promptCache is { SavesAfterPrefill: true } ? () => cacheNote = promptCache.Save(session, promptIds) : null;
            var result = gen.Generate(promptIds, reused, n, sampler, asJson ? null : s => Console.Out.Write(s), stops, afterPrefill, logprobOptions);
            if (promptCache is { SavesAll: true })
            {
                // The cache holds the prompt and the generated tokens fed back (not the last one sampled).
                cacheNote = promptCache.Save(session, [.. promptIds, .. result.Tokens.Take(session.Position - promptIds.Count)]);
            }

            if (asJson)
            {
                CliRunner.PrintJson(new
                {
                    Model = m.Path,
                    Kv = session.Cache.Description,
                    Attention = CommonOptions.AttentionName(precision),
                    Ctx = c,
                    Prompt = p,
                    PromptTokens = result.PromptTokens,
                    Tokens = result.Tokens,
                    Text = result.Text,
                    StopReason = result.StopReason,
                    PrefillTokensPerSecond = result.PrefillTokensPerSecond,
                    DecodeTokensPerSecond = result.DecodeTokensPerSecond,
                    KvBytes = result.KvBytes,
                    KvBitsPerElement = plan.AverageBits(m.Config.KvHeads, m.Config.HeadDim, result.PromptTokens.Count + result.Tokens.Count),
                    Logprobs = LogprobsJson(tok, result),
                    GrammarComplete = constraint?.IsComplete,
                    Speculative = SpeculativeOptions.Json(speculation, result.Speculation),
                });
            }
            else
            {
                Console.Out.WriteLine();
                Console.Error.WriteLine($"[{result.PromptTokens.Count} prompt tokens, {result.Tokens.Count} generated ({result.StopReason}); prefill {result.PrefillTokensPerSecond:F1} tok/s, decode {result.DecodeTokensPerSecond:F1} tok/s; KV cache {session.Cache.Description} {result.KvBytes:N0} bytes; attention {CommonOptions.AttentionName(precision)}{GrammarNote(constraint)}{SpeculativeOptions.Note(result.Speculation)}]");
                PrintLogprobs(tok, result);
            }

            if (cacheNote is not null)
            {
                Console.Error.WriteLine(cacheNote);
            }

            return 0;
        }));
        return cmd;
    }

    // The prompt text and the option it came from: --prompt, or the file --file names (not both).
    internal static (string Text, string Option) Prompt(ParseResult r, Option<string> prompt, Option<string?> file)
    {
        if (r.GetValue(file) is not { } path)
        {
            return (r.GetValue(prompt) ?? string.Empty, "--prompt");
        }

        if (r.GetResult(prompt) is { Implicit: false })
        {
            throw new ArgumentException("--file and --prompt: give the prompt one way, not both");
        }

        if (!File.Exists(path))
        {
            throw new ArgumentException(Directory.Exists(path) ? $"--file {path}: is a folder; give the prompt's text file" : $"--file {path}: no such file");
        }

        try
        {
            return (KvAdaQuant.Evaluation.Datasets.DatasetReader.CheckText(File.ReadAllText(path), path), $"--file {path}");
        }
        catch (KvAdaQuant.Evaluation.Datasets.DatasetFormatException e)
        {
            throw new ArgumentException($"--file {e.Message}", e);
        }
    }

    // With a grammar: whether the text is a whole sentence of it and how many full masks the sampler needed.
    internal static string GrammarNote(GrammarConstraint? constraint) => constraint is null
        ? string.Empty
        : $"; grammar {(constraint.IsComplete ? "complete" : "incomplete")}, {constraint.MaskCount} full masks";

    // The generated tokens' entries for --json (null without --logprobs).
    private static object[]? LogprobsJson(Tokenization.ITokenizer tok, GenerationResult result) =>
        result.Logprobs is { } lp ? LogprobText.Json(tok, result.PromptTokens[^1], lp) : null;

    // Without --json: a line per generated token on stderr, after the text.
    private static void PrintLogprobs(Tokenization.ITokenizer tok, GenerationResult result)
    {
        if (result.Logprobs is not { } lp)
        {
            return;
        }

        int top = lp.Count > 0 ? lp[0].Top.Count : 0;
        Console.Error.WriteLine($"[logprobs: per generated token its text, ln p and p under the model{(top > 0 ? $", then the {top} most likely tokens" : string.Empty)}]");
        foreach (var line in LogprobText.Lines(tok, result.PromptTokens[^1], lp))
        {
            Console.Error.WriteLine(line);
        }
    }

    private static int GenerateOnGpu(
        ParseResult r, LlamaModel m, Tokenization.ITokenizer tok, int c, int n, string p, string[] stops, SamplingOptions sampling, GbnfGrammar? grammar, Option<string?> kv,
        Option<string?> kvPlan, Option<bool> json, LogprobOptions? logprobs, int? ubatch)
    {
        string? kvText = r.GetValue(kv);
        string? planPath = r.GetValue(kvPlan);
        var plan = KvCacheFactory.ResolvePlan(kvText is null && planPath is null ? "fp16" : kvText, planPath, m.Config.Layers);
        using CudaContext context = DeviceOptions.OpenCuda();
        // Temperature, top-k and top-p sample on the device; min-p, the penalties, logit biases and a grammar on the host (the
        // logits copied back).
        var constraint = grammar is null ? null : new GrammarConstraint(grammar, tok);
        var sampler = sampling.Create(r, constraint, tok);
        sampler.CheckVocabulary(m.Config.VocabSize);
        using var decoder = new CudaDecoder(context, m, plan, 1, c, prefillChunk: ubatch ?? CudaDecoder.DefaultPrefillChunk);
        bool asJson = r.GetValue(json);
        if (!asJson)
        {
            Console.Error.WriteLine($"[cuda: {context.DeviceName}; {decoder.BuildNote}; weights {decoder.WeightTypes}, {decoder.WeightBytes:N0} bytes uploaded in {decoder.UploadSeconds:F1} s; KV cache {decoder.Layout}, {decoder.CacheBytes:N0} bytes for {c} positions]");
            Console.Out.Write(p);
        }

        var generator = new CudaGenerator(decoder, tok);
        var result = logprobs is not null
            ? new Generator(new CudaDecodeSession(decoder), tok).Generate(tok.Encode(p, addBos: true), 0, n, sampler, asJson ? null : s => Console.Out.Write(s), stops, logprobs: logprobs)
            : sampler.IsBasic
            ? generator.Generate(p, n, r.GetValue(sampling.Temperature), r.GetValue(sampling.TopK), r.GetValue(sampling.TopP), r.GetValue(sampling.Seed), asJson ? null : s => Console.Out.Write(s), stops)
            : generator.Generate(p, n, sampler, asJson ? null : s => Console.Out.Write(s), stops);
        if (asJson)
        {
            CliRunner.PrintJson(new
            {
                Model = m.Path,
                Device = $"cuda: {context.DeviceName}",
                Kv = plan.Name,
                Ctx = c,
                Prompt = p,
                PromptTokens = result.PromptTokens,
                Tokens = result.Tokens,
                Text = result.Text,
                StopReason = result.StopReason,
                PrefillTokensPerSecond = result.PrefillTokensPerSecond,
                DecodeTokensPerSecond = result.DecodeTokensPerSecond,
                KvBytes = result.KvBytes,
                WeightBytes = decoder.WeightBytes,
                DeviceBytes = decoder.DeviceBytes,
                Logprobs = LogprobsJson(tok, result),
                GrammarComplete = constraint?.IsComplete,
            });
        }
        else
        {
            Console.Out.WriteLine();
            Console.Error.WriteLine($"[{result.PromptTokens.Count} prompt tokens, {result.Tokens.Count} generated ({result.StopReason}); prefill {result.PrefillTokensPerSecond:F1} tok/s ({(decoder.PrefillChunk == 1 ? "position by position" : $"chunks of {decoder.PrefillChunk} positions")}), decode {result.DecodeTokensPerSecond:F1} tok/s on the GPU; KV cache {plan.Name} {result.KvBytes:N0} bytes allocated{GrammarNote(constraint)}]");
            PrintLogprobs(tok, result);
        }

        return 0;
    }
}
