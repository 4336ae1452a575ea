using System.Text.Json;
using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Grammar;
using KvAdaQuant.KvCache;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// Grammars and JSON schemas on the GPU decode path: a constrained sampler is not basic, so <see cref="CudaGenerator"/>
/// copies the logits back and samples on the host through <see cref="Generator"/>, where the grammar applies. With an
/// FP16 cache the constrained tokens equal the CPU engine's with an FP16 cache and the same constraint. Runs only where
/// libcuda and NVRTC load.
/// </summary>
public class CudaGrammarTests(ITestOutputHelper output)
{
    private const string Pattern = "root ::= [0-9]{3} \"-\" [a-z]{1,8} \".\"";
    private const string Schema = """{"type":"object","properties":{"name":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":0,"maximum":99}},"required":["name","age"]}""";

    [SkippableTheory]
    [InlineData("stories260K")]
    [InlineData("stories3M-q80")]
    public void A_grammar_on_the_gpu_gives_the_cpu_engines_tokens_with_an_fp16_cache(string name)
    {
        bool open = CudaContext.TryOpen(out CudaContext? context, out string reason);
        Skip.IfNot(open, reason);
        Skip.IfNot(NvrtcCompiler.TryLoad(out _, out string nvrtcReason), nvrtcReason);
        using (context)
        {
            using var model = ModelLoader.Load(name);
            var tok = model.Tokenizer!;
            var plan = KvPlan.Parse("fp16", model.Config.Layers);
            using var decoder = new CudaDecoder(context!, model, plan, 1, 256);
            var gpu = new CudaGenerator(decoder, tok);
            using var transformer = new Transformer(model, 2);
            using var session = new InferenceSession(transformer, KvCacheFactory.Create(plan, transformer.CacheLayout(256)));
            var cpu = new Generator(session, tok);
            foreach (string grammarText in new[] { Pattern, JsonSchemaGrammar.FromSchema(Schema) })
            {
                var grammar = GbnfGrammar.Parse(grammarText);
                foreach (var (temperature, seed) in new[] { (0f, 42UL), (0.8f, 7UL) })
                {
                    var onGpu = gpu.Generate("Once upon a time", 60, new Sampler(temperature, seed: seed) { Grammar = new GrammarConstraint(grammar, tok) });
                    var onCpu = cpu.Generate("Once upon a time", 60, new Sampler(temperature, seed: seed) { Grammar = new GrammarConstraint(grammar, tok) });
                    output.WriteLine($"{name} T={temperature}: GPU {onGpu.Text} ({onGpu.StopReason}) | CPU {onCpu.Text} ({onCpu.StopReason})");
                    Assert.Equal(onCpu.Tokens, onGpu.Tokens);
                    Assert.Equal("eos", onGpu.StopReason);
                    Assert.True(grammar.Matches(onGpu.Text), onGpu.Text);
                }
            }

            // The schema's text is JSON valid under it.
            var json = gpu.Generate("Once upon a time", 60, new Sampler { Grammar = new GrammarConstraint(GbnfGrammar.Parse(JsonSchemaGrammar.FromSchema(Schema)), tok) });
            using var doc = JsonDocument.Parse(json.Text);
            Assert.True(doc.RootElement.GetProperty("name").GetString()!.Length <= 10);
            Assert.InRange(doc.RootElement.GetProperty("age").GetInt32(), 0, 99);
        }
    }

    [SkippableFact]
    public void A_grammar_on_the_gpu_with_a_packed_cache_follows_the_grammar()
    {
        bool open = CudaContext.TryOpen(out CudaContext? context, out string reason);
        Skip.IfNot(open, reason);
        Skip.IfNot(NvrtcCompiler.TryLoad(out _, out string nvrtcReason), nvrtcReason);
        using (context)
        {
            using var model = ModelLoader.Load("stories3M-q80");
            var tok = model.Tokenizer!;
            using var decoder = new CudaDecoder(context!, model, KvPlan.Parse("k4v2", model.Config.Layers), 1, 256);
            var grammar = GbnfGrammar.Parse(Pattern);
            var r = new CudaGenerator(decoder, tok).Generate("Once upon a time", 60, new Sampler { Grammar = new GrammarConstraint(grammar, tok) });
            output.WriteLine($"k4v2: {r.Text} ({r.StopReason})");
            Assert.Equal("eos", r.StopReason);
            Assert.True(grammar.Matches(r.Text), r.Text);
        }
    }
}
