using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

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
        var temperature = new Option<float>("--temperature") { Description = "sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1f };
        var seed = new Option<ulong>("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };
        var ctx = new Option<int>("--ctx") { Description = "context length (0 = the model's)", DefaultValueFactory = _ => 0 };
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("generate", "Generate text from a prompt, streaming it, then print speed and KV memory.")
        {
            model, tokenizer, prompt, maxTokens, temperature, topK, topP, seed, ctx, kv, kvPlan, threads, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
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

            c = c == 0 ? m.Config.ContextLength : c;
            using var transformer = new Transformer(m, r.GetValue(threads));
            var plan = KvCacheFactory.ResolvePlan(r.GetValue(kv), r.GetValue(kvPlan), m.Config.Layers);
            using var session = new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(c)));
            var sampler = new Sampler(r.GetValue(temperature), r.GetValue(topK), r.GetValue(topP), r.GetValue(seed));
            bool asJson = r.GetValue(json);
            var gen = new Generator(session, tok);
            var p = r.GetValue(prompt) ?? string.Empty;
            if (!asJson)
            {
                Console.Out.Write(p);
            }

            var result = gen.Generate(p, n, sampler, asJson ? null : s => Console.Out.Write(s));
            if (asJson)
            {
                CliRunner.PrintJson(new
                {
                    Model = m.Path,
                    Kv = session.Cache.Description,
                    Prompt = p,
                    PromptTokens = result.PromptTokens,
                    Tokens = result.Tokens,
                    Text = result.Text,
                    StopReason = result.StopReason,
                    PrefillTokensPerSecond = result.PrefillTokensPerSecond,
                    DecodeTokensPerSecond = result.DecodeTokensPerSecond,
                    KvBytes = result.KvBytes,
                    KvBitsPerElement = plan.AverageBits(m.Config.KvHeads, m.Config.HeadDim, result.PromptTokens.Count + result.Tokens.Count),
                });
            }
            else
            {
                Console.Out.WriteLine();
                Console.Error.WriteLine($"[{result.PromptTokens.Count} prompt tokens, {result.Tokens.Count} generated ({result.StopReason}); prefill {result.PrefillTokensPerSecond:F1} tok/s, decode {result.DecodeTokensPerSecond:F1} tok/s; KV cache {session.Cache.Description} {result.KvBytes:N0} bytes]");
            }

            return 0;
        }));
        return cmd;
    }
}
