using System.CommandLine;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq info</c>: shape, parameters, tensor types and KV bytes of a model.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var json = CommonOptions.Json();
        var kv = CommonOptions.Kv();
        var kvPlan = CommonOptions.KvPlan();
        var ctx = new Option<int>("--ctx") { Description = "context length for kv_bytes (0 = the model's)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("info", "Show a model's architecture, shapes, parameter count, tensor types and the KV cache bytes of a plan at a context.")
        {
            model, tokenizer, kv, kvPlan, ctx, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var c = m.Config;
            var w = m.Weights;
            int n = r.GetValue(ctx);
            if (n < 0 || n > c.ContextLength)
            {
                throw new ArgumentException($"--ctx must be in 0..{c.ContextLength} (0 = the model's context), got {n}");
            }

            n = n == 0 ? c.ContextLength : n;
            var plan = KvCacheFactory.ResolvePlan(r.GetValue(kv), r.GetValue(kvPlan), c.Layers);
            plan.Validate(c.Layers, c.HeadDim);
            var fp16 = KvPlan.Parse("fp16", c.Layers);
            var types = w.Layers.SelectMany(l => new[] { l.Wq, l.Wk, l.Wv, l.Wo, l.W1, l.W2, l.W3 }).Append(w.TokenEmbedding).Append(w.Output)
                .GroupBy(x => x.Type.ToString()).ToDictionary(g => g.Key, g => g.Distinct().Count());
            var info = new
            {
                Model = m.Path,
                m.Format,
                c.Architecture,
                c.Dim,
                c.HiddenDim,
                NLayers = c.Layers,
                NHeads = c.Heads,
                NKvHeads = c.KvHeads,
                c.HeadDim,
                c.VocabSize,
                ContextLength = c.ContextLength,
                c.RopeTheta,
                RopeLayout = c.RopeLayout.ToString(),
                c.NormEps,
                c.TiedEmbeddings,
                ParameterCount = m.ParameterCount,
                TensorTypes = types,
                WeightBytes = w.BytesPerToken,
                Kv = plan.Name,
                Ctx = n,
                KvBytesPerToken = plan.BytesPerToken(c.KvHeads, c.HeadDim),
                KvBytes = plan.BytesAt(c.KvHeads, c.HeadDim, n),
                KvBitsPerElement = plan.AverageBits(c.KvHeads, c.HeadDim, n),
                KvBytesPerTokenFp16 = c.Fp16KvBytesPerToken,
                KvBytesFp16 = fp16.BytesAt(c.KvHeads, c.HeadDim, n),
                KvLayers = plan.Layers.Select(l => new { K = l.K.ToString(), V = l.V.ToString() }).ToArray(),
                Tokenizer = m.Tokenizer?.GetType().Name,
                ChatTemplate = KvAdaQuant.Engine.ChatTemplate.Detect(ChatTemplateText.Read(m.Path, r.GetValue(tokenizer)))?.Name ?? "unrecognized",
            };
            if (r.GetValue(json))
            {
                CliRunner.PrintJson(info);
            }
            else
            {
                foreach (var p in info.GetType().GetProperties())
                {
                    var v = p.GetValue(info);
                    var s = v switch
                    {
                        System.Collections.IDictionary d => string.Join(", ", d.Keys.Cast<object>().Select(k => $"{k}: {d[k]}")),
                        System.Collections.IEnumerable e and not string => string.Join("; ", e.Cast<object>().Select((x, i) => $"{i}: {x}")),
                        _ => v?.ToString(),
                    };
                    Console.Out.WriteLine($"{p.Name,-22} {s}");
                }
            }

            return 0;
        }));
        return cmd;
    }
}
