using KvAdaQuant.Cli;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Gguf;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Cli;

/// <summary><c>kvaq convert</c> end to end through the command line parser (exit codes and the files written).</summary>
public class ConvertCommandTests
{
    private static int Kvaq(params string[] args) => Program.BuildRoot().Parse(args).Invoke();

    [Fact]
    public void ConvertsLlama2cModelWithItsTokenizer()
    {
        using var dir = new TempDir();
        var output = dir.File("s.gguf");
        Assert.Equal(0, Kvaq("convert", "--model", Fixtures.Stories260K, "--out", output, "--type", "q8_0", "--json"));
        using var g = GgufFile.Open(output);
        Assert.Equal("llama", g.GetString("general.architecture"));
        Assert.Equal("llama", g.GetString("tokenizer.ggml.model"));
        Assert.Equal(512, ((string[])g.Get("tokenizer.ggml.tokens")!).Length);
        Assert.Equal(GgmlType.Q8_0, g.FindTensor("blk.0.attn_q.weight")!.Type);
        Assert.Equal(GgmlType.F32, g.FindTensor("blk.0.attn_norm.weight")!.Type);
        Assert.Null(g.FindTensor("output.weight")); // stories260K shares its classifier with the embedding
        Assert.False(File.Exists(output + ".partial"));
    }

    [Fact]
    public void WritesSyntheticPresetThatLoads()
    {
        using var dir = new TempDir();
        var output = dir.File("q.gguf");
        Assert.Equal(0, Kvaq("convert", "--synthetic", "tiny-qwen2", "--out", output, "--type", "q4_0", "--seed", "3", "--json"));
        using var m = ModelLoader.Load(output);
        Assert.Equal("qwen2", m.Config.Architecture);
        Assert.Equal(GgmlType.Q4_0, m.Weights.Layers[1].W2.Type);
    }

    [Theory]
    [InlineData("convert", "--synthetic", "tiny-llama", "--out", "{dir}/x.gguf", "--type", "q8_1")]
    [InlineData("convert", "--synthetic", "no-such-preset", "--out", "{dir}/x.gguf")]
    [InlineData("convert", "--out", "{dir}/x.gguf")]
    [InlineData("convert", "--model", "stories260K", "--synthetic", "tiny-llama", "--out", "{dir}/x.gguf")]
    [InlineData("convert", "--model", "stories260K", "--tokenizer", "{tok4096}", "--out", "{dir}/x.gguf")]
    [InlineData("convert", "--synthetic", "tiny-llama", "--out", "{dir}/no/such/folder/x.gguf")]
    [InlineData("convert", "--synthetic", "tiny-llama", "--out", "")]
    [InlineData("convert", "--synthetic", "tiny-llama", "--out", "{dir}")]
    public void BadOptionsFailWithExitCodeOneAndNoFile(params string[] args)
    {
        using var dir = new TempDir();
        var resolved = args.Select(a => a.Replace("{dir}", dir.Path).Replace("{tok4096}", Fixtures.Stories3MTokenizer)).ToArray();
        Assert.Equal(1, Kvaq(resolved));
        Assert.Empty(Directory.GetFiles(dir.Path, "*", SearchOption.AllDirectories));
    }

    [Theory]
    [InlineData("", "kvaq: error: --out: the path is empty; give a .gguf file or a folder to write")]
    [InlineData("{dir}", "kvaq: error: --type: 'q8_0' cannot be written to a Hugging Face folder, which holds f32, f16 or bf16 weights (quantized models are dequantized); f32, f16, bf16, q8_0, q4_0, q4_k_m, q4_k_s, q6_k, q2_k, q3_k_s, q3_k_m, q3_k_l, q5_k_s, q5_k_m, iq4_nl, iq4_xs, q4_1, q5_1, q5_0 are for .gguf files")]
    [InlineData("{dir}/no/such/x.gguf", "kvaq: error: --out {dir}/no/such/x.gguf: the folder {dir}/no/such does not exist")]
    public void BadOutIsNamedBeforeAnyConversion(string output, string message)
    {
        using var dir = new TempDir();
        var (rc, stdout, stderr) = KvaqProcess.Run("convert", "--model", Fixtures.Stories260K, "--out", output.Replace("{dir}", dir.Path), "--type", "q8_0");
        Assert.Equal(1, rc);
        Assert.Equal(message.Replace("{dir}", dir.Path), stderr.TrimEnd()); // one line, no conversion progress before it
        Assert.Empty(stdout);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }
}
