using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using KvAdaQuant.Tests.Cli;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The kernels whose AVX-VNNI instruction (<c>vpdpbusd</c>) has a <c>vpmaddubsw</c> + <c>vpmaddwd</c> route for CPUs
/// without it (AMD Zen 4, Intel Ice Lake server: their 512-bit VNNI is not exposed by .NET 10) promise the same bits:
/// the Q8_0 prefill tile (<c>Tile4x4Signed</c>), the int8 attention scores (8-token steps, 8-bit codes split into
/// nibbles) and the IQ4_NL / IQ4_XS row groups (signed levels, <c>Iq4Dp</c>; IQ4_XS files keep IQ4_NL for rows of 192,
/// which llama.cpp cannot make IQ4_XS). Before those routes such CPUs took other kernels (the IQ4 files per-row ones,
/// with other rounding), and the perplexities differed. On a CPU with AVX-VNNI the in-process tests only reach the VNNI route, so this runs the real kvaq twice,
/// once with <c>DOTNET_EnableAVXVNNI=0</c>, and asserts the perplexities are the same double: every prefill tile, every
/// int8 score and every value sum on the way agreed bit for bit.
/// </summary>
public sealed class NoAvxVnniRouteTests(NoAvxVnniRouteTests.ConvertedFiles files) : IClassFixture<NoAvxVnniRouteTests.ConvertedFiles>
{
    public static TheoryData<string, string> Cases => new()
    {
        { "q8_0", "k4v2" },
        { "q8_0", "k8v4" },
        { "q4_0", "k4v2" },
        { "iq4_nl", "k4v2" },
        { "iq4_xs", "k4v2" },
        { "q2_k", "k4v2" },
        { "q3_k_m", "k4v2" },
        { "q4_k_m", "k4v2" },
        { "q5_k_m", "k4v2" },
        { "q6_k", "k4v2" },
        { "q4_1", "k4v2" },
        { "q5_1", "k4v2" },
    };

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void PerplexityIsTheSameDoubleWithAndWithoutAvxVnni(string type, string kv)
    {
        Skip.IfNot(AvxVnni.IsSupported, "this CPU has no AVX-VNNI: every test here already runs the vpmaddubsw route");
        Skip.IfNot(Avx512BW.IsSupported && Avx512BW.VL.IsSupported, "AVX-512BW not available: the int8 kernels run their scalar twin");
        string gguf = files.Get(type);
        string[] args = ["perplexity", "-m", gguf, "--data", "wikitext-2/wiki.test.raw", "--chars", "4000", "--ctx", "128", "--kv", kv, "--attn-int8-values", "--threads", "2", "--json"];

        var withVnni = Perplexity(KvaqProcess.Run(args));
        var without = Perplexity(KvaqProcess.RunWithEnvironment(new Dictionary<string, string> { ["DOTNET_EnableAVXVNNI"] = "0" }, args));

        Assert.True(withVnni > 1 && double.IsFinite(withVnni), $"perplexity {withVnni}");
        Assert.Equal(BitConverter.DoubleToInt64Bits(withVnni), BitConverter.DoubleToInt64Bits(without));
    }

    /// <summary>stories3M converted once per weight type (the theory's cases run one after another).</summary>
    public sealed class ConvertedFiles : IDisposable
    {
        private readonly TempDir _dir = new();
        private readonly Dictionary<string, string> _files = [];

        public string Get(string type)
        {
            if (!_files.TryGetValue(type, out var gguf))
            {
                gguf = _dir.File($"s3m-{type}.gguf");
                var (rc, _, stderr) = KvaqProcess.Run("convert", "-m", "stories3M-q80", "--out", gguf, "--type", type, "--threads", "2", "--json");
                Assert.True(rc == 0, stderr);
                _files[type] = gguf;
            }

            return gguf;
        }

        public void Dispose() => _dir.Dispose();
    }

    private static double Perplexity((int Rc, string Stdout, string Stderr) run)
    {
        Assert.True(run.Rc == 0, run.Stderr);
        var root = JsonDocument.Parse(run.Stdout).RootElement;
        Assert.Equal("int8-values", root.GetProperty("attention").GetString());
        return root.GetProperty("perplexity").GetDouble();
    }
}
