using System.Runtime.CompilerServices;
using KvAdaQuant.Allocation;
using KvAdaQuant.Analysis;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests;

/// <summary>
/// The README's "Using the library" example, run as written (the region between the README markers below is the README's
/// C# block, which <see cref="ReadmeShowsThisExampleVerbatim"/> checks), then its results checked.
/// </summary>
public sealed class LibraryExampleTests(ITestOutputHelper log)
{
    [Fact]
    public void ReadmeExampleRunsAndItsResultsHold()
    {
        using var dir = new TempDir();
        string planPath = Path.Combine(dir.Path, "plan.json");
        var output = new StringWriter();

        // README:begin
        using var model = ModelLoader.Load("stories3M-q80"); // GGUF, llama2.c .bin or a Hugging Face folder; bare names: $KVAQ_MODELS, ../shared/models
        using var transformer = new Transformer(model, threads: 2);
        var tokenizer = model.Tokenizer!;
        var config = model.Config;

        // 1. Generate with a K4V2 cache: 4-bit keys, 2-bit values (per token, groups of 32 channels).
        GenerationResult story;
        using (var session = new InferenceSession(transformer, KvCacheFactory.Create("k4v2", transformer.CacheLayout(256))))
        {
            story = new Generator(session, tokenizer).Generate("Once upon a time", maxTokens: 32, new Sampler(temperature: 0));
        }

        output.WriteLine($"{story.Text} [{story.DecodeTokensPerSecond:F0} tok/s, {story.KvBytes:N0} B of KV]");

        // 2. Measure K and V norms on calibration text and allocate bits by norm (the paper's policy) at K3V3's cost:
        //    4 bits per element with the scales and zero points (one FP16 pair per 32 codes).
        string data = Path.Combine(ModelPaths.FixturesRoot()!, "data");
        var calibration = tokenizer.Encode(File.ReadAllText(Path.Combine(data, "ptb", "ptb.valid.txt"))[..20_000], addBos: true)[..256];
        KvAnalysis analysis = new KvAnalyzer(transformer).Run(calibration, "ptb.valid.txt", bits: [], probe: null);
        LayerNorms norms = analysis.Norms(NormScore.Frobenius, NormSource.Activations);
        var k4v4 = KvPlan.Parse("k4v4", config.Layers).Layers[0]; // the layout every layer's K and V keep; the allocator picks bits
        var cost = new SpecBitCost(k4v4.K, k4v4.V, config.HeadDim, tokens: 256);
        BitAllocation bits = NormAwareAllocator.Allocate(norms, budget: 4, new BitRange([2, 3, 4, 6, 8]), cost); // 1-bit values wreck attention
        KvPlan plan = AllocationPlan.ToKvPlan(bits, cost, "norm-aware-4");
        File.WriteAllText(planPath, plan.ToJson()); // what `kvaq --kv-plan` and KvPlan.Load read

        // 3. Perplexity of the plan against the FP32 cache on held-out text.
        var test = tokenizer.Encode(File.ReadAllText(Path.Combine(data, "wikitext-2", "wiki.test.raw"))[..8_000], addBos: true);
        PerplexityResult Perplexity(KvPlan p) => PerplexityEvaluator.Evaluate(transformer, test, 128, layout => KvCacheFactory.Create(p, layout), tokenizer.BosToken);
        var fp32 = Perplexity(KvPlan.Parse("fp32", config.Layers));
        var planned = Perplexity(KvPlan.Load(planPath));
        output.WriteLine($"{plan.Name}: {plan.AverageBits(config.KvHeads, config.HeadDim, 128):F2} bits/element, perplexity {planned.Perplexity:F2} (FP32 {fp32.Perplexity:F2})");
        // README:end

        // Generation: 32 greedy tokens after the prompt (or an end of text), decoded text that continues the prompt.
        Assert.True(story.Tokens.Count == 32 || story.StopReason != "length", $"{story.Tokens.Count} tokens, stop {story.StopReason}");
        Assert.NotEmpty(story.Text.Trim());
        var k4v2 = KvPlan.Parse("k4v2", config.Layers);
        int cached = story.PromptTokens.Count + story.Tokens.Count - 1; // the last sampled token is never fed back
        Assert.Equal(k4v2.BytesAt(config.KvHeads, config.HeadDim, cached), story.KvBytes);

        // Allocation: norms per layer, the nominal budget met, and the plan file reads back to the same plan.
        Assert.Equal(config.Layers, norms.Layers);
        Assert.All(norms.Keys.Concat(norms.Values), n => Assert.True(n > 0 && double.IsFinite(n)));
        Assert.InRange(bits.AverageBits(cost), 3.5, 4 + NormAwareAllocator.Tolerance);
        Assert.Equal(plan.ToJson(), KvPlan.Load(planPath).ToJson());

        // Perplexity: the same chunks for both caches, and the quantized plan costs something but stays near FP32.
        Assert.Equal(fp32.TokensScored, planned.TokensScored);
        Assert.True(planned.Perplexity > fp32.Perplexity * 0.98 && planned.Perplexity < fp32.Perplexity * 3, $"plan {planned.Perplexity}, fp32 {fp32.Perplexity}");
        Assert.Contains("norm-aware-4:", output.ToString());
        log.WriteLine(output.ToString());
    }

    [Fact]
    public void ReadmeShowsThisExampleVerbatim()
    {
        var readme = File.ReadAllLines(FindReadme());
        int heading = Array.FindIndex(readme, l => l.Trim() == "## Using the library");
        Assert.True(heading >= 0, "README.md has no '## Using the library' section");
        int open = Array.FindIndex(readme, heading, l => l.Trim() == "```csharp");
        int close = Array.FindIndex(readme, open + 1, l => l.Trim() == "```");
        Assert.True(open > heading && close > open, "the section has no ```csharp block");
        var shown = readme[(open + 1)..close].Select(Normalize).Where(l => l.Length > 0).ToArray();

        var source = File.ReadAllLines(SourceFile());
        int begin = Array.FindIndex(source, l => l.Trim() == "// README:begin");
        int end = Array.FindIndex(source, l => l.Trim() == "// README:end");
        var tested = source[(begin + 1)..end].Select(Normalize).Where(l => l.Length > 0).ToArray();

        // The README block may add using directives before the tested lines.
        var body = shown.SkipWhile(l => l.StartsWith("using KvAdaQuant", StringComparison.Ordinal)).ToArray();
        Assert.Equal(string.Join('\n', tested), string.Join('\n', body));
    }

    private static string Normalize(string line)
    {
        // The test passes the plan's path and a writer in; the README shows a file name and the console.
        return line.Trim()
            .Replace("File.WriteAllText(\"plan.json\"", "File.WriteAllText(planPath", StringComparison.Ordinal)
            .Replace("KvPlan.Load(\"plan.json\")", "KvPlan.Load(planPath)", StringComparison.Ordinal)
            .Replace("Console.WriteLine(", "output.WriteLine(", StringComparison.Ordinal);
    }

    private static string SourceFile([CallerFilePath] string path = "") => path;

    private static string FindReadme()
    {
        for (var d = new DirectoryInfo(Path.GetDirectoryName(SourceFile())!); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "README.md");
            if (File.Exists(candidate) && Directory.Exists(Path.Combine(d.FullName, "src", "KvAdaQuant")))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException("README.md of the repository not found above " + SourceFile());
    }
}
