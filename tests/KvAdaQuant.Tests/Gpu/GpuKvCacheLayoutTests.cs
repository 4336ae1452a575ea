using KvAdaQuant.Gpu;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>The GPU decode cache: exact device byte counts and clear errors for plans it cannot hold.</summary>
public class GpuKvCacheLayoutTests
{
    private static readonly ModelConfig Llama8B = new()
    {
        Dim = 4096,
        HiddenDim = 14336,
        Layers = 32,
        Heads = 32,
        KvHeads = 8,
        HeadDim = 128,
        VocabSize = 128256,
        ContextLength = 131072,
    };

    [Fact]
    public void Fp16CacheBytesAreTwoHalvesPerElement()
    {
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("fp16", 32), Llama8B, 8, 32768);
        Assert.False(layout.AnyPacked);

        // 32 layers x (K + V) x 8 sequences x 8 KV heads x 32768 positions x 128 dims x 2 bytes = 32 GiB.
        Assert.Equal(32L * 2 * 8 * 8 * 32768 * 128 * 2, layout.ByteCount);
        Assert.Equal(32L << 30, layout.ByteCount);
    }

    [Fact]
    public void K4V2CacheBytesCountCodesPairsAndTheWindow()
    {
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 32), Llama8B, 8, 32768);
        Assert.True(layout.AnyPacked);
        Assert.Equal(64, layout.Window);
        Assert.Equal(96, layout.ResidualCapacity);
        Assert.All(layout.Layers, l => Assert.True(l.UsesFastKernel));

        // Per head: K 64 code bytes + 2 pairs x 4 bytes, V 32 + 8 bytes per position; window 96 rows x 128 x 2 bytes x (K + V).
        long perHead = (32768L * (64 + 8)) + (32768L * (32 + 8)) + (96L * 128 * 2 * 2);
        Assert.Equal(32L * 8 * 8 * perHead, layout.ByteCount);
    }

    [Fact]
    public void K4V2OnHeadDim64UsesTheTensorCoreKernel()
    {
        // Llama 3.2 1B: 16 layers, 8 KV heads of 64 dims, one per-token group of 64 per head row.
        var llama1B = new ModelConfig { Dim = 2048, HiddenDim = 8192, Layers = 16, Heads = 32, KvHeads = 8, HeadDim = 64, VocabSize = 128256, ContextLength = 131072 };
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 16), llama1B, 8, 32768);
        Assert.All(layout.Layers, l => Assert.True(l.UsesFastKernel));

        // Per head: K 32 code bytes + 1 pair x 4 bytes, V 16 + 4 bytes per position; window 96 rows x 64 x 2 bytes x (K + V).
        long perHead = (32768L * (32 + 4)) + (32768L * (16 + 4)) + (96L * 64 * 2 * 2);
        Assert.Equal(16L * 8 * 8 * perHead, layout.ByteCount);

        // Other head dims, other groups or a chunk other than a multiple of 32 stay on the FP32 kernel.
        var hd16 = llama1B with { Dim = 128, Heads = 8, KvHeads = 2, HeadDim = 16 };
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 16), hd16, 1, 1024).Layers, l => Assert.False(l.UsesFastKernel));
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2:g32", 16), llama1B, 1, 1024).Layers, l => Assert.False(l.UsesFastKernel));
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 16), llama1B, 1, 1024, window: 63, flushChunk: 1).Layers, l => Assert.False(l.UsesFastKernel));
    }

    [Fact]
    public void ExplicitGroupAndWindowAreKept()
    {
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("k8v4:g32:r100", 32), Llama8B, 1, 1024);
        Assert.Equal(128, layout.Window);
        Assert.Equal(32, layout.Layers[0].Keys!.GroupSize);
        Assert.False(layout.Layers[0].UsesFastKernel);
        Assert.Equal(PackedKvFormat.Parse("4:g32:tok", 128), layout.Layers[0].Values);
    }

    [Fact]
    public void ChunkOfOneMirrorsTheCpuWindowAndLeavesTheK4V2Kernel()
    {
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 32), Llama8B, 1, 1024, window: 63, flushChunk: 1);
        Assert.Equal(64, layout.ResidualCapacity);
        Assert.All(layout.Layers, l => Assert.False(l.UsesFastKernel));
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 32), Llama8B, 1, 1024).WithoutFastKernel().Layers, l => Assert.False(l.UsesFastKernel));
        Assert.Equal("k4:g64:tok/v2:g64:tok x32; FP16 window 63 + 1", layout.ToString());
    }

    [Theory]
    [InlineData("fp32", "fp32")]
    [InlineData("k4v2:pc", "per-channel")]
    [InlineData("k4v2:sym", "symmetric")]
    [InlineData("k4v16", "only one of K and V")]
    [InlineData("k4v2:sink4", "sinks")]
    public void PlansTheGpuCannotHoldAreClearErrors(string spec, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => GpuKvCacheLayout.Create(KvPlan.Parse(spec, 32), Llama8B, 1, 1024));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.Contains("--kv", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RotatedPlansKeepTheirRotationPerSide()
    {
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse("k4v2:krot", 32), Llama8B, 1, 1024);
        Assert.All(layout.Layers, l => Assert.True(l.RotateKeys && !l.RotateValues));
        Assert.EndsWith(":rot/v2:g64:tok", layout.Layers[0].ToString(), StringComparison.Ordinal);
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2:rot", 32), Llama8B, 1, 1024).Layers, l => Assert.True(l.RotateKeys && l.RotateValues));
        Assert.All(GpuKvCacheLayout.Create(KvPlan.Parse("k4v2", 32), Llama8B, 1, 1024).Layers, l => Assert.False(l.RotateKeys || l.RotateValues));
    }

    [Fact]
    public void PlanFileErrorsNameTheFileNotKv()
    {
        // A plan from --kv-plan was reported as "--kv 'name'", an option the user never gave.
        var plan = KvPlan.FromJson(
            """{"name": "mixed", "layers": [{"k": {"bits": 4}, "v": {"bits": 2}}, {"k": {"bits": 4, "axis": "channel"}, "v": {"bits": 2}}]}""",
            "--kv-plan mixed.json");
        var twoLayers = Llama8B with { Layers = 2 };
        var e = Assert.Throws<ArgumentException>(() => GpuKvCacheLayout.Create(plan, twoLayers, 1, 1024));
        Assert.Equal("--kv-plan mixed.json: layer 1 K uses per-channel groups; the GPU decode path quantizes per token only", e.Message);
        e = Assert.Throws<ArgumentException>(() => GpuKvCacheLayout.Create(plan, Llama8B, 1, 1024));
        Assert.Equal("--kv-plan mixed.json: the plan has 2 layers, the model 32", e.Message);
        e = Assert.Throws<ArgumentException>(() => GpuKvCacheLayout.Create(KvPlan.Parse("K4V2:Sym", 32), Llama8B, 1, 1024));
        Assert.StartsWith("--kv 'K4V2:Sym': layer 0 K is symmetric", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CpuSpecMatchesTheGpuGroupAndWindow()
    {
        Assert.Equal("fp16", DecodeVerification.CpuSpec("fp16", 128));
        Assert.Equal("k16v16", DecodeVerification.CpuSpec("k16v16", 128));
        Assert.Equal("k4v2:g64:r64", DecodeVerification.CpuSpec("k4v2", 128));
        Assert.Equal("k4v2:r64", DecodeVerification.CpuSpec("k4v2", 8));
        Assert.Equal("k4v2:g32:r64", DecodeVerification.CpuSpec("k4v2:g32", 128));

        // The GPU always keeps its window of 64: r0 and r64 mirror it, any other residual would compare unlike caches.
        Assert.Equal("k4v2:r64:g64", DecodeVerification.CpuSpec("k4v2:r0", 128));
        Assert.Equal("k4v2:r64:g64", DecodeVerification.CpuSpec("k4v2:r64", 128));
        Assert.Equal("k4v2:kpc:r64", DecodeVerification.CpuSpec("k4v2:kpc:r0", 8));
        var e = Assert.Throws<ArgumentException>(() => DecodeVerification.CpuSpec("k4v2:r32", 128));
        Assert.StartsWith("--kv 'k4v2:r32': keeps a residual window of 32 tokens", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CpuPlanDoesForEachLayerWhatCpuSpecDoesForASpec()
    {
        // Layer 0 leaves the group open, layer 1 gives 32 and the check's residual 64, layer 2 is FP16.
        var plan = KvPlan.FromJson(
            """
            {"name": "mixed", "layers": [
              {"k": {"bits": 4}, "v": {"bits": 2}},
              {"k": {"bits": 8, "group": 32, "residual": 64}, "v": {"bits": 4, "group": 32}},
              {"k": {"bits": "fp16"}, "v": {"bits": "fp16"}}]}
            """,
            "--kv-plan mixed.json");
        var cpu = DecodeVerification.CpuPlan(plan, 128);
        Assert.Equal(KvPlan.Parse(DecodeVerification.CpuSpec("k4v2", 128), 1).Layers[0], cpu.Layers[0]);
        Assert.Equal(KvPlan.Parse(DecodeVerification.CpuSpec("k8v4:g32", 128), 1).Layers[0], cpu.Layers[1]);
        Assert.Equal(plan.Layers[2], cpu.Layers[2]);
        Assert.Equal("mixed", cpu.Name);
        Assert.Equal("--kv-plan mixed.json (g64 where 0, r64)", cpu.Source);

        // Head dim 8: 64 does not divide the head, so the group stays automatic (the GPU picks the same).
        var small = DecodeVerification.CpuPlan(KvPlan.FromJson("""{"layers": [{"k": {"bits": 4}, "v": {"bits": 2}}]}""", "--kv-plan s.json"), 8);
        Assert.Equal(KvPlan.Parse(DecodeVerification.CpuSpec("k4v2", 8), 1).Layers[0], small.Layers[0]);
        Assert.Equal("--kv-plan s.json (r64)", small.Source);
    }

    [Fact]
    public void CpuPlanRefusesAResidualTheGpuWindowDoesNotMirror()
    {
        var plan = KvPlan.FromJson("""{"layers": [{"k": {"bits": 4}, "v": {"bits": 2}}, {"k": {"bits": 4}, "v": {"bits": 2, "residual": 128}}]}""", "--kv-plan r.json");
        var e = Assert.Throws<ArgumentException>(() => DecodeVerification.CpuPlan(plan, 128));
        Assert.Equal(
            "--kv-plan r.json: layer 1 V keeps a residual window of 128 tokens; the check runs packed caches with one FP16 window of 64 in every layer (GPU 63 + 1, the CPU cache's r64): give residual 0 or 64",
            e.Message);
    }
}
