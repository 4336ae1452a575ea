using System.CommandLine;
using KvAdaQuant.Formats;

namespace KvAdaQuant.Cli.Commands;

/// <summary><c>kvaq info</c>: shape, parameters, tensor types and KV bytes of a model.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var json = CommonOptions.Json();
        var cmd = new Command("info", "Show a model's architecture, shapes, parameter count, tensor types and KV bytes per token.")
        {
            model, tokenizer, json,
        };
        cmd.SetAction(r => CliRunner.Run(() =>
        {
            using var m = ModelLoader.Load(r.GetValue(model)!, r.GetValue(tokenizer));
            var c = m.Config;
            var w = m.Weights;
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
                KvBytesPerTokenFp16 = c.Fp16KvBytesPerToken,
                Tokenizer = m.Tokenizer?.GetType().Name,
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
                    var s = v is System.Collections.IDictionary d ? string.Join(", ", d.Keys.Cast<object>().Select(k => $"{k}: {d[k]}")) : v?.ToString();
                    Console.Out.WriteLine($"{p.Name,-22} {s}");
                }
            }

            return 0;
        }));
        return cmd;
    }
}
