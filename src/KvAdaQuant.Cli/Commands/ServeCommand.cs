using System.CommandLine;
using System.Net;
using KvAdaQuant.Cli.Serve;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq serve</c>: an OpenAI-compatible HTTP server over one model (llama-server's endpoints and option names).</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var host = new Option<string>("--host") { Description = "address to listen on: an IP address (0.0.0.0 for all) or localhost", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "port to listen on (0 = a free port; the URL is printed)", DefaultValueFactory = _ => 8080 };
        var ctx = new Option<int>("--ctx", "--ctx-size", "-c") { Description = "positions of the KV cache each request gets (0 = the model's context, at most 4,096)", DefaultValueFactory = _ => 0 };
        var template = new Option<string>("--chat-template")
        {
            Description = $"template of /v1/chat/completions: auto (detected from the model's chat_template; none when it has none) or one of {ChatTemplate.Names}",
            DefaultValueFactory = _ => "auto",
        };
        var toolFormat = new Option<string>("--tool-format")
        {
            Description = "how /v1/chat/completions offers tools and reads calls: auto (from the model's chat_template, as llama-server: hermes for a ChatML template with <tool_call>, llama3 for a Llama 3.1/3.2 one, else generic) or generic, llama3, hermes",
            DefaultValueFactory = _ => "auto",
        };
        var apiKey = new Option<string?>("--api-key") { Description = "require \"Authorization: Bearer KEY\" on every endpoint but /health and /v1/models" };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "tokens to generate when a request gives no max_tokens (0 = until EOS or the context is full)", DefaultValueFactory = _ => 0 };
        var sampling = new SamplingOptions();
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var device = DeviceOptions.Device();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var parallel = new Option<int>("--parallel", "-np") { Description = "requests served at once (llama-server's -np), each with its own KV cache of --ctx positions; their decode steps and prompt chunks run together in one forward pass; CPU only", DefaultValueFactory = _ => 1 };
        var ubatch = CommonOptions.Ubatch();
        ubatch.Aliases.Add("--ubatch-size");
        ubatch.Aliases.Add("-ub");
        var metrics = new Option<bool>("--metrics") { Description = "serve GET /metrics: Prometheus counters under llama-server's names (prompt and generated tokens and seconds, forward passes, busy slots per pass, requests processing and waiting) and the slots' KV-cache bytes and tokens" };
        var slotSavePath = new Option<string?>("--slot-save-path")
        {
            Description = "folder for POST /slots/{id}?action=save|restore (llama-server's option): a slot's KV cache and tokens as a kvaq state file, and back; created if missing; CPU only",
        };
        var alias = new Option<string?>("--alias", "-a") { Description = "the model's name in responses and /v1/models (llama-server's option; default: the model file's name)" };
        var embeddings = new Option<bool>("--embeddings", "--embedding")
        {
            Description = "serve POST /v1/embeddings (llama-server's option): each input's final hidden states (after the final norm), pooled by --pooling and scaled to unit length; CPU only",
        };
        var pooling = new Option<string>("--pooling")
        {
            Description = "how --embeddings pools the positions: mean (every position, BOS included), last, or cls (the first)",
            DefaultValueFactory = _ => "mean",
        };
        var cmd = new Command(
            "serve",
            "Serve the model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, streaming) and /v1/embeddings (--embeddings), and llama-server's /completion, /props, /apply-template, /health, /tokenize, /detokenize, /slots (save, restore, erase), /metrics; one request at a time, or --parallel N at once with their decode steps batched; Ctrl+C or SIGTERM stops.")
        {
            model, tokenizer, host, port, ctx, template, toolFormat, apiKey, maxTokens, kv, kvPlan, threads, device, attnInt8, attnInt8Values, parallel, metrics, ubatch, slotSavePath, embeddings, pooling, alias,
        };
        var grammarOptions = new GrammarOptions();
        var speculative = new SpeculativeOptions();
        foreach (var o in sampling.All.Concat(grammarOptions.All).Concat(speculative.All))
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(r => CliRunner.Run(() =>
        {
            var address = Address(r.GetValue(host) ?? string.Empty);
            int p = r.GetValue(port);
            if (p is < 0 or > 65535)
            {
                throw new ArgumentException($"--port must be in 0..65535 (0 = a free port), got {p}");
            }

            string? key = r.GetValue(apiKey);
            if (key is not null && key.Trim().Length == 0)
            {
                throw new ArgumentException("--api-key: the key is empty");
            }

            string? name = r.GetValue(alias);
            if (name is not null && name.Trim().Length == 0)
            {
                throw new ArgumentException("--alias: the name is empty");
            }

            int n = r.GetValue(maxTokens);
            if (n < 0)
            {
                throw new ArgumentException($"--max-tokens must be >= 0 (0 = until EOS or the context is full), got {n}");
            }

            var defaultSampler = sampling.Create(r); // checks the sampling options: they are the defaults of every request
            var defaultGrammar = grammarOptions.ParseWithText(r); // before the model loads: a bad grammar or schema is named at once
            var defaults = new CompletionRequest(
                null, null, n == 0 ? null : n, r.GetValue(sampling.Temperature), r.GetValue(sampling.TopK), r.GetValue(sampling.TopP), r.GetValue(sampling.Seed), [], Stream: false)
            {
                MinP = r.GetValue(sampling.MinP),
                RepeatPenalty = r.GetValue(sampling.RepeatPenalty),
                RepeatLastN = r.GetValue(sampling.RepeatLastN),
                PresencePenalty = r.GetValue(sampling.PresencePenalty),
                FrequencyPenalty = r.GetValue(sampling.FrequencyPenalty),
                LogitBias = defaultSampler.LogitBias,
                TypicalP = defaultSampler.TypicalP,
                Mirostat = defaultSampler.Mirostat,
                MirostatTau = defaultSampler.MirostatTau,
                MirostatEta = defaultSampler.MirostatEta,
                XtcProbability = defaultSampler.XtcProbability,
                XtcThreshold = defaultSampler.XtcThreshold,
                DryMultiplier = defaultSampler.DryMultiplier,
                DryBase = defaultSampler.DryBase,
                DryAllowedLength = defaultSampler.DryAllowedLength,
                DryPenaltyLastN = defaultSampler.DryPenaltyLastN,
                DrySequenceBreakers = sampling.Breakers(r),
                TopNSigma = defaultSampler.TopNSigma,
                Grammar = defaultGrammar?.Text,
                GrammarField = defaultGrammar is null ? null : grammarOptions.Name(r),
                ParsedGrammar = defaultGrammar?.Grammar,
            };
            string templateName = r.GetValue(template) ?? "auto";
            ChatTemplate? chosen = templateName.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : ChatCommand.ParseTemplate(templateName);
            ChatToolFormat? tools = ToolFormat(r.GetValue(toolFormat) ?? "auto");

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            defaultSampler.CheckVocabulary(m.Config.VocabSize);
            int c = ChatCommand.Context(r.GetValue(ctx), m.Config.ContextLength);
            chosen ??= ChatCommand.DetectTemplate(m.Path, r.GetValue(tokenizer));
            tools ??= ChatToolFormat.Detect(ChatTemplateText.Read(m.Path, r.GetValue(tokenizer)), chosen);

            var precision = CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values));
            bool onGpu = r.GetValue(device) == DeviceOptions.Cuda;
            string? slotFolder = SlotFolder(r.GetValue(slotSavePath), onGpu);
            EmbeddingPooling? pool = Pooling(r.GetValue(embeddings), r.GetResult(pooling) is { Implicit: false } ? r.GetValue(pooling) : null, onGpu);
            if (speculative.Given(r) is { } specOption && (onGpu || r.GetValue(parallel) != 1))
            {
                throw new ArgumentException($"{specOption}: speculative decoding serves one request at a time on the CPU engine; it cannot be combined with {(onGpu ? "--device cuda" : "--parallel")}");
            }

            using var engine = DecodeEngine.Open(m, r.GetValue(kv), r.GetValue(kvPlan), onGpu, r.GetValue(threads), c, precision, r.GetValue(parallel), r.GetValue(ubatch));
            using var speculation = speculative.Create(r, m, r.GetValue(tokenizer), c, r.GetValue(threads));
            if (speculation is not null)
            {
                SpeculativeOptions.Check(engine.Sessions[0], r.GetValue(kvPlan) is null ? "--kv" : "--kv-plan");
            }

            using var served = new ServedModel(
                name ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(m.Path)), m.Path, engine.Sessions, engine.KvName, onGpu ? DeviceOptions.Cuda : DeviceOptions.Cpu, tok, chosen, defaults)
            {
                SlotSavePath = slotFolder,
                ToolFormat = tools,
                Pooling = pool,
                Speculative = speculation?.Settings,
            };
            served.WarmUp();
            served.Metrics = r.GetValue(metrics) ? new ServeMetrics(engine.Transformer) : null;
            string where = engine.OnGpu ? "on the GPU" : $"{engine.Threads} threads; attention {CommonOptions.AttentionName(precision)}";
            string slots = served.Slots > 1 ? $"; {served.Slots} requests at once, their decode steps batched" : string.Empty;
            slots += speculation is null ? string.Empty : $"; speculative decoding ({speculation.Description}, up to {speculation.Settings.MaxDraft} guesses a step)";
            slots += pool is { } pooled ? $"; embeddings ({pooled.ToString().ToLowerInvariant()} pooling)" : string.Empty;
            Console.Error.WriteLine($"[serve: {m.Path}; KV cache {served.Kv}, {c} positions per request{slots}; template {chosen.Name}, tool calls {tools.Name}; {where}{(key is null ? string.Empty : "; API key required")}]");
            new KvaqServer(served, key, Console.Error).RunAsync(address, p, url =>
            {
                Console.Out.WriteLine($"kvaq: listening on {url}");
                Console.Out.Flush();
            }).GetAwaiter().GetResult();
            string batched = engine.Batching is { } b
                ? $"; {b.DecodedTokens} tokens decoded and {b.PromptTokens} prompt tokens in {b.Steps} steps ({b.MixedSteps} with both), up to {b.LargestStep} requests a step"
                : string.Empty;
            Console.Error.WriteLine($"[serve: stopped{batched}]");
            return 0;
        }));
        return cmd;
    }

    // --tool-format: the format named, or null for auto (detected from the model's Jinja template and the template in use).
    private static ChatToolFormat? ToolFormat(string name)
    {
        if (name.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        try
        {
            return ChatToolFormat.Parse(name);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--tool-format: {e.Message} or auto", e);
        }
    }

    // --embeddings and --pooling (given: the value; null when left out): mean unless said; not on the GPU.
    private static EmbeddingPooling? Pooling(bool embeddings, string? pooling, bool onGpu)
    {
        if (!embeddings)
        {
            return pooling is null ? null : throw new ArgumentException("--pooling has nothing to apply to without --embeddings");
        }

        if (onGpu)
        {
            throw new ArgumentException("--embeddings runs on the CPU engine; it cannot be combined with --device cuda");
        }

        return (pooling ?? "mean").Trim().ToLowerInvariant() switch
        {
            "mean" => EmbeddingPooling.Mean,
            "last" => EmbeddingPooling.Last,
            "cls" => EmbeddingPooling.Cls,
            _ => throw new ArgumentException($"--pooling: expected mean, last or cls, got '{pooling}'"),
        };
    }

    // --slot-save-path: a folder (created with its parents when missing); not with --device cuda, whose caches state files cannot hold.
    private static string? SlotFolder(string? path, bool onGpu)
    {
        if (path is null)
        {
            return null;
        }

        if (path.Trim().Length == 0)
        {
            throw new ArgumentException("--slot-save-path: the folder is empty");
        }

        if (onGpu)
        {
            throw new ArgumentException("--slot-save-path: state files hold the CPU engine's KV caches; it cannot be combined with --device cuda");
        }

        string full = Path.GetFullPath(path);
        if (File.Exists(full))
        {
            throw new ArgumentException($"--slot-save-path: {path} is a file; give a folder");
        }

        try
        {
            Directory.CreateDirectory(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"--slot-save-path: cannot create the folder {path}: {e.Message}", e);
        }

        return full;
    }

    private static IPAddress Address(string host)
    {
        if (host.Trim().Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            return IPAddress.Loopback;
        }

        return IPAddress.TryParse(host.Trim(), out var address)
            ? address
            : throw new ArgumentException($"--host: expected an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost, got '{host}'");
    }
}
