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
        var apiKey = new Option<string?>("--api-key") { Description = "require \"Authorization: Bearer KEY\" on every endpoint but /health and /v1/models" };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "tokens to generate when a request gives no max_tokens (0 = until EOS or the context is full)", DefaultValueFactory = _ => 0 };
        var sampling = new SamplingOptions();
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var device = DeviceOptions.Device();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var cmd = new Command(
            "serve",
            "Serve the model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, streaming) and llama-server's /health, /tokenize, /detokenize; one request at a time; Ctrl+C or SIGTERM stops.")
        {
            model, tokenizer, host, port, ctx, template, apiKey, maxTokens, kv, kvPlan, threads, device, attnInt8, attnInt8Values,
        };
        foreach (var o in sampling.All)
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

            int n = r.GetValue(maxTokens);
            if (n < 0)
            {
                throw new ArgumentException($"--max-tokens must be >= 0 (0 = until EOS or the context is full), got {n}");
            }

            sampling.Create(r); // checks the sampling options: they are the defaults of every request
            var defaults = new CompletionRequest(
                null, null, n == 0 ? null : n, r.GetValue(sampling.Temperature), r.GetValue(sampling.TopK), r.GetValue(sampling.TopP), r.GetValue(sampling.Seed), [], Stream: false)
            {
                MinP = r.GetValue(sampling.MinP),
                RepeatPenalty = r.GetValue(sampling.RepeatPenalty),
                RepeatLastN = r.GetValue(sampling.RepeatLastN),
                PresencePenalty = r.GetValue(sampling.PresencePenalty),
                FrequencyPenalty = r.GetValue(sampling.FrequencyPenalty),
            };
            string templateName = r.GetValue(template) ?? "auto";
            ChatTemplate? chosen = templateName.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : ChatCommand.ParseTemplate(templateName);

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            int c = r.GetValue(ctx);
            if (c < 0 || c > m.Config.ContextLength)
            {
                throw new ArgumentException($"--ctx must be in 0..{m.Config.ContextLength} (the model's context), got {c}");
            }

            if (c == 0)
            {
                c = Math.Min(m.Config.ContextLength, 4096);
            }

            if (chosen is null)
            {
                chosen = ChatTemplate.Detect(ChatTemplateText.Read(m.Path, r.GetValue(tokenizer)));
                if (chosen is null)
                {
                    chosen = ChatTemplate.None;
                    Console.Error.WriteLine($"[the model's chat_template is none of {ChatTemplate.Names}: using none; --chat-template chooses one]");
                }
            }

            var precision = CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values));
            bool onGpu = r.GetValue(device) == DeviceOptions.Cuda;
            if (onGpu && precision != AttentionPrecision.Fp32)
            {
                throw new ArgumentException($"{CommonOptions.AttentionFlag(precision)} selects a CPU attention kernel; it cannot be combined with --device cuda");
            }

            // --device cuda: the model and the KV cache on the GPU (a batch-1 CudaDecoder; fp16 unless --kv or --kv-plan says
            // otherwise, as generate and chat), sampling on the host; else the CPU engine.
            string? kvText = r.GetValue(kv);
            string? planPath = r.GetValue(kvPlan);
            var plan = KvCacheFactory.ResolvePlan(onGpu && kvText is null && planPath is null ? "fp16" : kvText, planPath, m.Config.Layers);
            using CudaContext? context = onGpu ? DeviceOptions.OpenCuda() : null;
            using CudaDecoder? decoder = context is null ? null : new CudaDecoder(context, m, plan, 1, c);
            using Transformer? transformer = onGpu ? null : new Transformer(m, r.GetValue(threads));
            if (transformer is not null)
            {
                CommonOptions.NoteIfNeverQuantized(plan, c);
            }

            using InferenceSession? cpu = transformer is null ? null : new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(c), precision));
            IDecodeSession session = cpu is not null ? cpu : new CudaDecodeSession(decoder!);
            string kvName = cpu is not null ? cpu.Cache.Description : decoder!.Layout.Name;
            using var served = new ServedModel(
                Path.GetFileName(Path.TrimEndingDirectorySeparator(m.Path)), m.Path, session, kvName, onGpu ? DeviceOptions.Cuda : DeviceOptions.Cpu, tok, chosen, defaults);
            if (decoder is not null)
            {
                Console.Error.WriteLine($"[cuda: {context!.DeviceName}; {decoder.BuildNote}; weights {decoder.WeightTypes}, {decoder.WeightBytes:N0} bytes uploaded in {decoder.UploadSeconds:F1} s; KV cache {decoder.Layout}, {decoder.CacheBytes:N0} bytes for {c} positions; sampling on the host]");
            }

            served.WarmUp();
            string engine = transformer is not null ? $"{transformer.Threads} threads; attention {CommonOptions.AttentionName(precision)}" : "on the GPU";
            Console.Error.WriteLine($"[serve: {m.Path}; KV cache {served.Kv}, {c} positions per request; template {chosen.Name}; {engine}{(key is null ? string.Empty : "; API key required")}]");
            new KvaqServer(served, key, Console.Error).RunAsync(address, p, url =>
            {
                Console.Out.WriteLine($"kvaq: listening on {url}");
                Console.Out.Flush();
            }).GetAwaiter().GetResult();
            Console.Error.WriteLine("[serve: stopped]");
            return 0;
        }));
        return cmd;
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
