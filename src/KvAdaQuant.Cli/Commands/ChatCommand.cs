using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq chat</c>: a conversation on standard input, the cache kept from turn to turn.</summary>
internal static class ChatCommand
{
    private static readonly JsonSerializerOptions JsonLines = new(CliRunner.JsonOptions) { WriteIndented = false };

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var system = new Option<string?>("--system") { Description = "system message (ignored by the none template)" };
        var template = new Option<string>("--chat-template")
        {
            Description = $"auto (detected from the model's chat_template; none when it has none) or one of {ChatTemplate.Names}",
            DefaultValueFactory = _ => "auto",
        };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "tokens to generate per reply at most", DefaultValueFactory = _ => 256 };
        var sampling = new SamplingOptions();
        var grammarOptions = new GrammarOptions();
        var speculative = new SpeculativeOptions();
        var reversePrompt = new Option<string[]>("--reverse-prompt", "-r")
        {
            Description = "end a reply once its text ends with this (repeatable), as llama.cpp's reverse prompt; e.g. -r \"User:\" for a base model",
            DefaultValueFactory = _ => [],
        };
        var inPrefix = new Option<string>("--in-prefix") { Description = "text put before each message", DefaultValueFactory = _ => string.Empty };
        var inSuffix = new Option<string>("--in-suffix") { Description = "text put after each message", DefaultValueFactory = _ => string.Empty };
        var ctx = new Option<int>("--ctx") { Description = "positions for the whole conversation (0 = the model's context, at most 4,096)", DefaultValueFactory = _ => 0 };
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var json = new Option<bool>("--json") { Description = "print one JSON line per reply to stdout instead of the text" };
        var ubatch = CommonOptions.Ubatch();
        var device = DeviceOptions.Device();
        var logprobs = new Option<int?>("--logprobs")
        {
            Description = $"record each reply token's log-probability under the model and the N most likely tokens at its position (0..{LogprobOptions.MaxTop}); printed after each reply, or as \"logprobs\" with --json",
        };
        var contextShift = new Option<bool>("--context-shift")
        {
            Description = "when a turn and its reply do not fit, drop the oldest exchanges (the system message stays) and feed the rest again, instead of refusing the turn",
        };
        var cmd = new Command(
            "chat",
            "Chat on standard input: each line is a message (end a line with \\ to continue it), the reply streams back; the KV cache is kept between turns. /reset starts over, /save FILE and /load FILE save and restore the conversation with its KV cache, /exit (or end of input) ends.")
        {
            model, tokenizer, system, template, maxTokens, reversePrompt, inPrefix, inSuffix, ctx, kv, kvPlan, threads, json, contextShift, device, logprobs, ubatch,
        };
        foreach (var o in sampling.All.Concat(grammarOptions.All).Concat(speculative.All))
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(r => CliRunner.Run(() =>
        {
            int n = r.GetValue(maxTokens);
            if (n < 1)
            {
                throw new ArgumentException($"--max-tokens must be >= 1, got {n}");
            }

            var grammar = grammarOptions.Parse(r);

            var sampler = sampling.Create(r);
            var logprobOptions = LogprobText.Options(r.GetValue(logprobs), "--logprobs");
            string[] stops = r.GetValue(reversePrompt) ?? [];
            if (stops.Any(string.IsNullOrEmpty))
            {
                throw new ArgumentException("--reverse-prompt: an empty text would end every reply at once");
            }

            string prefix = r.GetValue(inPrefix) ?? string.Empty, suffix = r.GetValue(inSuffix) ?? string.Empty;
            string templateName = r.GetValue(template) ?? "auto";
            ChatTemplate? chosen = templateName.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : ParseTemplate(templateName);
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            // Each reply starts the grammar over (the generator resets it per turn); DRY's breakers are matched on token text.
            GrammarConstraint? constraint = grammar is null ? null : new GrammarConstraint(grammar, tok);
            sampler = sampling.Create(r, constraint, tok);

            sampler.CheckVocabulary(m.Config.VocabSize);
            int c = Context(r.GetValue(ctx), m.Config.ContextLength);
            chosen ??= DetectTemplate(m.Path, r.GetValue(tokenizer));

            if (r.GetValue(device) == DeviceOptions.Cuda && speculative.Given(r) is { } specOption)
            {
                throw new ArgumentException($"{specOption}: speculative decoding runs on the CPU engine; it cannot be combined with --device cuda");
            }

            using var engine = DecodeEngine.Open(m, r.GetValue(kv), r.GetValue(kvPlan), r.GetValue(device) == DeviceOptions.Cuda, r.GetValue(threads), c, ubatch: r.GetValue(ubatch));
            IDecodeSession session = engine.Session;
            string kvDescription = engine.KvDescription;
            using var speculation = speculative.Create(r, m, r.GetValue(tokenizer), c, r.GetValue(threads));
            if (speculation is not null)
            {
                SpeculativeOptions.Check(session, r.GetValue(kvPlan) is null ? "--kv" : "--kv-plan");
            }

            ChatSession chat;
            try
            {
                chat = new ChatSession(session, tok, chosen, r.GetValue(system)) { ContextShift = r.GetValue(contextShift), Speculative = speculation?.Settings };
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"--chat-template: {e.Message}", e);
            }

            bool asJson = r.GetValue(json);
            bool interactive = !Console.IsInputRedirected;
            Console.Error.WriteLine($"[chat: {m.Path}; template {chosen.Name}; KV cache {kvDescription}, {c} positions; /reset starts over, {(chat.SupportsStateFiles ? "/save FILE and /load FILE keep the conversation" : "no /save or /load (the KV cache is on the GPU)")}, /exit ends]");
            // Ctrl+C while a reply streams ends that reply (as llama.cpp's conversation mode); at the prompt it ends kvaq.
            CancellationTokenSource? replying = null;
            using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
            {
                if (Volatile.Read(ref replying) is { } cts)
                {
                    context.Cancel = true;
                    cts.Cancel();
                }
            });
            int turn = 0;
            int refused = 0;
            while (ReadMessage(interactive) is { } message)
            {
                if (message.Trim() is "/exit" or "/quit")
                {
                    break;
                }

                if (message.Trim() == "/reset")
                {
                    chat.Reset();
                    Console.Error.WriteLine("[conversation reset]");
                    continue;
                }

                if (StateCommand(message) is { } command)
                {
                    if (!SaveOrLoad(chat, command.Name, command.Path))
                    {
                        refused++;
                    }

                    continue;
                }

                turn++;
                GenerationResult result;
                using var cts = new CancellationTokenSource();
                Volatile.Write(ref replying, cts);
                try
                {
                    result = chat.Reply(prefix + message + suffix, n, sampler, asJson ? null : s => Console.Out.Write(s), cts.Token, stops, logprobOptions);
                }
                catch (ArgumentException e)
                {
                    refused++;
                    Console.Error.WriteLine($"kvaq: error: turn {turn}: {e.Message}");
                    continue;
                }
                finally
                {
                    Volatile.Write(ref replying, null);
                }

                if (chat.LastShift is { } shift)
                {
                    Console.Error.WriteLine($"kvaq: note: turn {turn}: the context was full ({shift.PositionsBefore} of {c} positions used): dropped the {shift.DroppedMessages} oldest messages and fed the rest of the conversation again ({result.PromptTokens.Count} tokens)");
                }

                if (asJson)
                {
                    Console.Out.WriteLine(JsonSerializer.Serialize(
                        new
                        {
                            Turn = turn,
                            User = message,
                            Reply = result.Text,
                            Tokens = result.Tokens,
                            PromptTokens = result.PromptTokens.Count,
                            StopReason = result.StopReason,
                            Position = chat.Position,
                            Ctx = c,
                            Template = chosen.Name,
                            ShiftedMessages = chat.LastShift?.DroppedMessages ?? 0,
                            PrefillTokensPerSecond = result.PrefillTokensPerSecond,
                            DecodeTokensPerSecond = result.DecodeTokensPerSecond,
                            KvBytes = result.KvBytes,
                            Logprobs = result.Logprobs is { } lp ? LogprobText.Json(tok, Previous(result), lp) : null,
                            GrammarComplete = constraint?.IsComplete,
                            Speculative = SpeculativeOptions.Json(speculation, result.Speculation),
                        },
                        JsonLines));
                }
                else
                {
                    Console.Out.WriteLine();
                    Console.Error.WriteLine($"[{result.PromptTokens.Count} new prompt tokens, {result.Tokens.Count} generated ({result.StopReason}); prefill {result.PrefillTokensPerSecond:F1} tok/s, decode {result.DecodeTokensPerSecond:F1} tok/s; context {chat.Position}/{c}; KV cache {result.KvBytes:N0} bytes{GenerateCommand.GrammarNote(constraint)}{SpeculativeOptions.Note(result.Speculation)}]");
                    if (result.Logprobs is { } lp)
                    {
                        foreach (var line in LogprobText.Lines(tok, Previous(result), lp))
                        {
                            Console.Error.WriteLine(line);
                        }
                    }
                }

                Console.Out.Flush();
            }

            return refused == 0 ? 0 : 1;
        }));
        return cmd;
    }

    // The token before a reply's first (its turn's last; none for an empty turn, which goes on from the previous reply).
    private static int Previous(GenerationResult result) => result.PromptTokens.Count > 0 ? result.PromptTokens[^1] : -1;

    // "/save FILE" or "/load FILE" (the path may be missing: an error then), else null.
    private static (string Name, string Path)? StateCommand(string message)
    {
        string t = message.Trim();
        foreach (string name in new[] { "/save", "/load" })
        {
            if (t == name || t.StartsWith(name + " ", StringComparison.Ordinal) || t.StartsWith(name + "\t", StringComparison.Ordinal))
            {
                return (name, t[name.Length..].Trim());
            }
        }

        return null;
    }

    // Runs /save or /load; false (the error printed) when it failed. A refused /load leaves the conversation unchanged.
    private static bool SaveOrLoad(ChatSession chat, string command, string path)
    {
        try
        {
            if (path.Length == 0)
            {
                throw new ArgumentException($"{command} needs a file: {command} FILE");
            }

            if (command == "/save")
            {
                long bytes = chat.Save(path);
                Console.Error.WriteLine($"[saved the conversation to {path}: {chat.Tokens.Count} tokens, {chat.Messages.Count} messages, {bytes:N0} bytes]");
            }
            else
            {
                // (A GPU conversation refuses /load before looking for the file: ChatSession.Load says why.)
                if (chat.SupportsStateFiles && !File.Exists(path))
                {
                    throw new FileNotFoundException($"{path}: no such file");
                }

                var state = chat.Load(path);
                Console.Error.WriteLine($"[loaded the conversation from {path}: {state.Tokens.Count} tokens, {chat.Messages.Count} messages, {state.Bytes:N0} bytes, KV cache {state.KvDescription}; context {chat.Position}/{chat.Capacity}]");
            }

            return true;
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or KvCacheException or UnauthorizedAccessException or NotSupportedException)
        {
            Console.Error.WriteLine($"kvaq: error: {command}: {e.Message}");
            return false;
        }
    }

    /// <summary>
    /// The positions of a conversation (chat) or of each request (serve): <c>--ctx</c>, 0 meaning the model's context up to
    /// 4,096; outside 0..the model's context an error naming <c>--ctx</c>.
    /// </summary>
    internal static int Context(int ctx, int modelContext)
    {
        if (ctx < 0 || ctx > modelContext)
        {
            throw new ArgumentException($"--ctx must be in 0..{modelContext} (the model's context), got {ctx}");
        }

        return ctx == 0 ? Math.Min(modelContext, 4096) : ctx;
    }

    /// <summary>The template <c>--chat-template auto</c> finds in the model (or beside <c>--tokenizer</c>); none, with a note, when it is none of the built-in ones.</summary>
    internal static ChatTemplate DetectTemplate(string modelPath, string? tokenizerPath)
    {
        if (ChatTemplate.Detect(ChatTemplateText.Read(modelPath, tokenizerPath)) is { } found)
        {
            return found;
        }

        Console.Error.WriteLine($"[the model's chat_template is none of {ChatTemplate.Names}: using none; --chat-template chooses one]");
        return ChatTemplate.None;
    }

    internal static ChatTemplate ParseTemplate(string name)
    {
        try
        {
            return ChatTemplate.Parse(name);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--chat-template: {e.Message} or auto", e);
        }
    }

    // One message: a line, or several where each but the last ends with a backslash (joined by newlines, as llama.cpp's
    // multiline input); null at the end of input.
    private static string? ReadMessage(bool interactive)
    {
        var sb = new StringBuilder();
        while (true)
        {
            if (interactive)
            {
                Console.Error.Write(sb.Length == 0 ? "> " : ". ");
            }

            string? line = Console.In.ReadLine();
            if (line is null)
            {
                return sb.Length == 0 ? null : sb.ToString();
            }

            if (line.EndsWith('\\'))
            {
                sb.Append(line, 0, line.Length - 1).Append('\n');
                continue;
            }

            return sb.Append(line).ToString();
        }
    }
}
