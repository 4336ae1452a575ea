using System.Text.Json;
using KvAdaQuant.Allocation;
using KvAdaQuant.Cli;
using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Evaluation;

/// <summary><c>kvaq eval</c> and the sensitivity measurement on the real quantized cache.</summary>
public class EvalCommandTests
{
    [Fact]
    public void Grid_writes_table_csv_json_and_heatmap_and_more_bits_mean_less_kl()
    {
        using var dir = new TempDir();
        int rc = Program.BuildRoot().Parse(["eval", "--model", "stories260K", "--task", "kl", "--data", "sampled", "--ctx", "64", "--limit", "2",
            "--kv", "fp32", "--grid", "k2,8xv2,8", "--out", dir.Path, "--threads", "2"]).Invoke();
        Assert.Equal(0, rc);
        foreach (var f in new[] { "results.md", "results.csv", "results.json", "heatmap.png", "heatmap.svg", "heatmap_perplexity.png" })
        {
            Assert.True(File.Exists(dir.File(f)), f);
        }

        using var doc = JsonDocument.Parse(File.ReadAllText(dir.File("results.json")));
        var rows = doc.RootElement.GetProperty("results").EnumerateArray().ToDictionary(r => r.GetProperty("cache").GetString()!, r => r.GetProperty("metrics"));
        Assert.Equal(5, rows.Count);
        Assert.Equal(0, rows["fp32"].GetProperty("mean_kl").GetDouble());
        Assert.Equal(1, rows["fp32"].GetProperty("top1_agreement").GetDouble());
        Assert.True(rows["k8v8"].GetProperty("mean_kl").GetDouble() < rows["k2v2"].GetProperty("mean_kl").GetDouble());
        Assert.True(rows["k8v8"].GetProperty("mean_kl").GetDouble() < 0.01);
    }

    [Fact]
    public void Short_t_is_threads_as_in_every_other_command()
    {
        // --task once had -t too, so "--task kl -t 1" failed to parse ("--task expects a single argument but 2 were provided").
        var parse = Program.BuildRoot().Parse(["eval", "--task", "kl", "-t", "1"]);
        Assert.Empty(parse.Errors);
        Assert.Equal("kl", parse.GetValue<string>("--task"));
        Assert.Equal(1, parse.GetValue<int>("--threads"));
    }

    [Theory]
    [InlineData("--grid", "k2,4v2")]
    [InlineData("--grid", "k2,7xv2")]
    [InlineData("--task", "mmlu")]
    [InlineData("--limit", "-1")]
    [InlineData("--plans", "/nonexistent/plan.json")]
    [InlineData("--data", "/nonexistent/text.txt")]
    public void Bad_options_exit_with_code_one(string option, string value)
    {
        var args = new List<string> { "eval", "--model", "stories260K", "--limit", "1", "--ctx", "32" };
        if (option != "--task")
        {
            args.AddRange(["--task", "kl"]);
        }

        args.AddRange([option, value]);
        Assert.Equal(1, Program.BuildRoot().Parse(args.ToArray()).Invoke());
    }

    [Fact]
    public void Gsm8k_runs_with_the_default_ctx_and_max_tokens()
    {
        // The defaults were --ctx 256 and --max-tokens 256: "--max-tokens 256 leaves no room for the prompt in a context of 256".
        var (rc, stdout, stderr) = KvaqProcess.Run("eval", "--model", Fixtures.Stories260K, "--task", "gsm8k", "--limit", "1", "--threads", "1", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var row = Assert.Single(doc.RootElement.GetProperty("results").EnumerateArray());
        Assert.Equal(1, row.GetProperty("items").GetInt32());
    }

    [Theory]
    [InlineData("--plans", ",", "kvaq: error: --plans ',': no plan files")]
    [InlineData("--plans", "", "kvaq: error: --plans '': no plan files")]
    [InlineData("--grid", "k,xv2", "kvaq: error: --grid 'k,xv2': no key widths")]
    [InlineData("--grid", "k2xv,", "kvaq: error: --grid 'k2xv,': no value widths")]
    public void Empty_cache_lists_are_errors_naming_the_option(string option, string value, string message) =>
        Assert.StartsWith(message, EvalError("--task", "kl", "--data", "sampled", "--ctx", "32", "--limit", "1", option, value));

    [Theory]
    [InlineData("--grid k2xv2 --spec bogus", "--grid pair k2v2 with --spec 'bogus': unknown option 'bogus'")] // named --kv 'k2v2:bogus'
    [InlineData("--grid k2xv2 --spec g64", "--grid pair k2v2 with --spec 'g64': k.group 64 is larger than the head dimension 8")]
    [InlineData("--plans /nonexistent/plan.json", "--plans /nonexistent/plan.json: file not found")] // named --kv-plan
    public void Grid_and_plan_list_errors_name_the_options_given(string options, string message) =>
        Assert.StartsWith($"kvaq: error: {message}", EvalError(["--task", "kl", "--data", "sampled", "--ctx", "32", "--limit", "1", .. options.Split(' ')]));

    [Fact]
    public void Sampled_text_longer_than_a_stream_is_refused_before_any_work() =>
        // --limit x --ctx overflowed: "model-sampled text: need positive token counts, got -4 total, 4 per sequence".
        Assert.Equal(
            "kvaq: error: --limit 2147483647 chunks of --ctx 4 tokens of model-sampled text are 8589934588 tokens, more than one stream holds (2147483647)",
            EvalError("--task", "kl", "--data", "sampled", "--ctx", "4", "--limit", "2147483647").TrimEnd());

    [Fact]
    public void A_continuation_longer_than_the_context_names_the_item_and_ctx() =>
        Assert.StartsWith(
            "kvaq: error: item Mercury_417466, choice 0: a continuation of ",
            EvalError("--task", "arc_easy", "--data", Fixtures.Path("data", "arc", "ARC-Easy-Test.jsonl"), "--ctx", "4", "--limit", "1"));

    [Theory]
    [InlineData("arc_easy", "sampled", "--data sampled: only --task perplexity and kl take model-sampled text; --task arc_easy reads its dataset file")]
    [InlineData("lambada", "wikitext-2", "--data wikitext-2: a plain text for --task perplexity and kl; --task lambada reads its dataset file")]
    public void Data_that_does_not_apply_to_the_task_is_an_error(string task, string data, string message) =>
        Assert.StartsWith($"kvaq: error: {message}", EvalError("--task", task, "--data", data, "--limit", "1"));

    [Theory]
    [InlineData("perplexity", "100000", "--ctx 100000 exceeds the model's context length 512")]
    [InlineData("arc_easy", "513", "--ctx 513 exceeds the model's context length 512")]
    [InlineData("kl", "3", "--ctx must be at least 4, got 3")]
    public void Ctx_beyond_the_model_is_an_error_as_in_perplexity(string task, string ctx, string message) =>
        Assert.Equal($"kvaq: error: {message}", EvalError("--task", task, "--ctx", ctx, "--limit", "1").TrimEnd());

    [Theory]
    [InlineData("kl", "--spec", "g4", "--spec applies only to --grid pairs")]
    [InlineData("kl", "--shots", "2", "--shots applies only to --task gsm8k")]
    [InlineData("arc_easy", "--max-tokens", "16", "--max-tokens applies only to --task gsm8k")]
    [InlineData("kl", "--seed", "7", "--seed applies only to --data sampled")]
    public void Options_that_would_be_ignored_are_errors(string task, string option, string value, string message) =>
        Assert.StartsWith($"kvaq: error: {message}", EvalError("--task", task, "--ctx", "32", "--limit", "1", option, value));

    [Fact]
    public void Out_conflicts_are_reported_before_the_evaluation_runs()
    {
        using var dir = new TempDir();
        var file = dir.File("taken");
        File.WriteAllText(file, "x");

        // A dataset that does not exist would fail the evaluation: the --out error must come first.
        string[] task = ["--task", "arc_easy", "--data", dir.File("missing.jsonl")];
        Assert.Equal($"kvaq: error: --out {file}: is a file, not a folder", EvalError([.. task, "--out", file]).TrimEnd());
        Assert.Equal($"kvaq: error: --out {Path.Combine(file, "sub")}: {file} is a file, not a folder", EvalError([.. task, "--out", Path.Combine(file, "sub")]).TrimEnd());
        Directory.CreateDirectory(dir.File("results.json"));
        Assert.Equal($"kvaq: error: --out {dir.Path}: {dir.File("results.json")} is a folder where a results file goes", EvalError([.. task, "--out", dir.Path]).TrimEnd());
        Assert.True(File.Exists(file));
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Theory]
    [InlineData("arc_easy", "a.jsonl", "{\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"yes\",\"label\":\"A\"}]},\"answerKey\":\"A\"}", "a.jsonl:1: has 1 choice; needs at least 2")]
    [InlineData("arc_easy", "a.jsonl", "{\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"yes\",\"label\":\"A\"},{\"text\":\" \",\"label\":\"B\"}]},\"answerKey\":\"A\"}", "a.jsonl:1: choice B is empty; an empty continuation cannot be scored")]
    [InlineData("winogrande", "w.jsonl", "{\"sentence\":\"The cat sat on the _\",\"option1\":\"mat\",\"option2\":\"dog\",\"answer\":\"1\"}", "w.jsonl:1: nothing follows the \"_\" blank; an empty continuation cannot be scored")]
    [InlineData("hellaswag", "h.txt", "ctx\n0\none\n\nthree\nfour", "h.txt:4: ending 1 is empty; an empty continuation cannot be scored")]
    public void Dataset_items_that_cannot_be_scored_are_one_error_line(string task, string name, string content, string message)
    {
        using var dir = new TempDir();
        var path = dir.File(name);
        File.WriteAllText(path, content + "\n");
        Assert.Equal($"kvaq: error: {Path.Combine(dir.Path, message)}", EvalError("--task", task, "--data", path).TrimEnd());
    }

    [Fact]
    public void Multiple_choice_and_gsm8k_run_through_a_quantized_cache()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        Func<KvLayout, IKvCache> k4v2 = l => KvCacheFactory.Create("k4v2", l);
        var arc = new TaskEvaluator(transformer, model.Tokenizer!, new EvaluationOptions { Task = "arc_easy", Limit = 4 }).Evaluate(k4v2);
        Assert.Equal(4, arc.Items);
        Assert.InRange(arc.Metrics["acc"], 0, 1);
        Assert.Contains("acc_norm", arc.Metrics.Keys);
        Assert.Equal(StandardError.OfProportion(arc.Metrics["acc"], 4), arc.Metrics["acc_stderr"]);
        Assert.Equal(StandardError.OfProportion(arc.Metrics["acc_norm"], 4), arc.Metrics["acc_norm_stderr"]);
        var gsm = new TaskEvaluator(transformer, model.Tokenizer!, new EvaluationOptions { Task = "gsm8k", Limit = 1, Shots = 5, MaxNewTokens = 16, Context = 512 }).Evaluate(k4v2);
        Assert.Equal(1, gsm.Items);
        Assert.DoesNotContain("exact_match_strict_stderr", gsm.Metrics.Keys); // one item: no error (NaN is not reported)

        // stories260K's 512-token context holds no 5-shot GSM8K prompt: shots are dropped until the prompt fits.
        Assert.True(gsm.Metrics["shots_max"] < 5);
    }

    [Fact]
    public void The_perplexity_task_reports_llama_cpps_uncertainty_and_the_table_shows_it_beside_the_value()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        var options = new EvaluationOptions { Task = "perplexity", Data = "wikitext-2", Limit = 2, Context = 64 };
        var r = new TaskEvaluator(transformer, model.Tokenizer!, options).Evaluate(l => KvCacheFactory.Create("k4v2", l));
        Assert.True(double.IsFinite(r.Metrics["perplexity_uncertainty"]) && r.Metrics["perplexity_uncertainty"] > 0, $"{r.Metrics["perplexity"]} +/- {r.Metrics["perplexity_uncertainty"]}");

        // The same figures as kvaq perplexity's on the same text, chunks and cache.
        var (rc, stdout, stderr) = KvaqProcess.Run("perplexity", "-m", "stories260K", "-f", "wikitext-2/wiki.test.raw", "--ctx", "64", "--chunks", "2", "--kv", "k4v2", "--json");
        Assert.True(rc == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(doc.RootElement.GetProperty("perplexity").GetDouble(), r.Metrics["perplexity"], 9);
        Assert.Equal(doc.RootElement.GetProperty("perplexity_uncertainty").GetDouble(), r.Metrics["perplexity_uncertainty"], 9);
        var table = new EvaluationTable("m", "perplexity", "wikitext-2", [new EvaluationRow("k4v2", 4, 2, 3, r)]);
        string md = table.ToMarkdown();
        Assert.Contains($"| {EvaluationTable.Format("perplexity", r.Metrics["perplexity"])} ± {EvaluationTable.Format("perplexity", r.Metrics["perplexity_uncertainty"])} |", md);
        Assert.DoesNotContain("perplexity_uncertainty", md);
    }

    [Fact]
    public void Sensitivity_profile_on_the_real_cache_falls_with_bits()
    {
        using var model = ModelLoader.Load("stories260K");
        using var transformer = new Transformer(model, 2);
        var tokens = ModelTextSampler.Sample(transformer, model.Tokenizer!, 48, 48, 7);
        var reference = KlReference.Compute(transformer, tokens, 48, l => new FullPrecisionKvCache(l, false), 1, scoreFrom: 1);
        var cost = new SpecBitCost(new KvSpec(KvBits.Four), new KvSpec(KvBits.Four), 8, 48);
        var range = BitRange.Parse("2,8");
        var profile = SensitivityProfiler.Measure(reference, range, a => l => KvCacheFactory.Create(AllocationPlan.ToKvPlan(a, cost, "p"), l), "test");
        for (int l = 0; l < 5; l++)
        {
            Assert.True(profile.KeyKl[l][1] < profile.KeyKl[l][0], $"layer {l} K: {profile.KeyKl[l][1]} !< {profile.KeyKl[l][0]}");
            Assert.True(profile.ValueKl[l][1] < profile.ValueKl[l][0], $"layer {l} V");
        }

        var plan = SensitivityAllocator.Allocate(profile, 4.5, new NominalBitCost());
        // Ten tensors at 2 or 8 bits within 45 bits: at most four at 8 bits; since more bits always cut the KL here, the optimum takes all four.
        Assert.Equal(4.4, plan.AverageBits(new NominalBitCost()), 9);
    }

    /// <summary>Runs <c>kvaq eval</c> on stories260K, expecting exit code 1 and one error line on stderr (returned), nothing on stdout.</summary>
    private static string EvalError(params string[] args)
    {
        var (rc, stdout, stderr) = KvaqProcess.Run(["eval", "--model", Fixtures.Stories260K, "--threads", "1", .. args]);
        Assert.True(rc == 1, $"rc {rc}: {stderr}");
        Assert.Equal(string.Empty, stdout);
        Assert.StartsWith("kvaq: error: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        return stderr;
    }
}
