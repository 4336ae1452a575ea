using System.CommandLine;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq perplexity</c>: llama.cpp-style perplexity over a text file.</summary>
internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var data = CommonOptions.TextData();
        var ctx = CommonOptions.ChunkContext();
        var chars = CommonOptions.Chars();
        var chunks = CommonOptions.Chunks();
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var attnInt8 = CommonOptions.AttnInt8();
        var attnInt8Values = CommonOptions.AttnInt8Values();
        var cmd = new Command("perplexity", "Perplexity over a text file by llama.cpp's method (chunks of --ctx tokens, second half scored).")
        {
            model, tokenizer, data, ctx, chars, chunks, kv, kvPlan, threads, json, attnInt8, attnInt8Values,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            int nChunks = r.GetValue(chunks);
            if (nChunks < 0)
            {
                throw new ArgumentException($"--chunks must be >= 0 (0 = all), got {nChunks}");
            }

            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var tok = m.Tokenizer ?? throw new ArgumentException($"--tokenizer: no tokenizer found for {m.Path}; pass one");
            var plan = KvCacheFactory.ResolvePlan(r.GetValue(kv), r.GetValue(kvPlan), m.Config.Layers);
            plan.Validate(m.Config.Layers, m.Config.HeadDim);
            var precision = CommonOptions.Attention(r.GetValue(attnInt8), r.GetValue(attnInt8Values));
            bool int8 = precision != KvAdaQuant.KvCache.AttentionPrecision.Fp32;
            var attention = precision;
            var path = ModelPaths.ResolveData(r.GetValue(data)!);
            var text = DatasetReader.ReadText(path);
            int nChars = r.GetValue(chars);
            if (nChars < 0)
            {
                throw new ArgumentException($"--chars must be >= 0, got {nChars}");
            }

            if (nChars > 0 && nChars < text.Length)
            {
                text = text[..nChars];
            }

            if (text.Length == 0)
            {
                throw new ArgumentException($"--data {path}: the text is empty");
            }

            var tokens = tok.Encode(text, addBos: true);
            using var transformer = new Transformer(m, r.GetValue(threads));
            string spec = plan.Name;
            CommonOptions.NoteIfNeverQuantized(plan, r.GetValue(ctx));
            int maxChunks = nChunks > 0 ? nChunks : int.MaxValue;
            bool asJson = r.GetValue(json);
            var result = PerplexityEvaluator.Evaluate(transformer, tokens, r.GetValue(ctx), layout => KvCacheFactory.Create(plan, layout, attention), tok.BosToken,
                asJson ? null : (i, n, ppl) => Console.Error.Write($"\r[{i}/{n}] ppl {ppl:F4}   "), maxChunks);
            if (asJson)
            {
                CliRunner.PrintJson(new
                {
                    Model = m.Path,
                    Data = path,
                    Kv = spec,
                    Attention = CommonOptions.AttentionName(precision),
                    result.Perplexity,
                    result.PerplexityUncertainty,
                    result.TokensScored,
                    result.Chunks,
                    Ctx = result.ContextLength,
                    result.TextTokens,
                    result.Seconds,
                });
            }
            else
            {
                Console.Error.WriteLine();
                Console.Out.WriteLine($"perplexity {result.Perplexity:F4} +/- {result.PerplexityUncertainty:F4} over {result.TokensScored} tokens ({result.Chunks} chunks of {result.ContextLength}; KV {spec}; attention {CommonOptions.AttentionName(precision)}; {result.Seconds:F1} s)");
            }

            return 0;
        }));
        return cmd;
    }
}
