using KvAdaQuant.Gpu;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// The fast kernel's launch policy, checked without a GPU: resident blocks from registers and shared memory, the
/// packed tokens per split and the residual window's blocks (the choices the H200 sweeps in the README measured best).
/// </summary>
public class FastSplitPolicyTests
{
    private const int H200Sms = 132;

    [Theory]
    [InlineData(128, 43300, 4)] // 4 x 128 x 128 registers fill the 64K register file
    [InlineData(150, 43300, 3)] // 152 x 32 = 4,864 per warp: 13 warps, 3 blocks
    [InlineData(168, 43300, 3)]
    [InlineData(96, 43300, 5)] // shared memory: 5 x (43,300 + 1,024) <= 228 KB
    [InlineData(64, 43300, 5)]
    [InlineData(64, 8000, 8)] // registers: 65,536 / 2,048 / 4
    public void ResidentBlocksFollowRegistersAndSharedMemory(int registers, int shared, int expected)
    {
        Assert.Equal(expected, CudaPackedKvAttention.ResidentBlocks(registers, shared));
    }

    [Theory]
    [InlineData(8 * 8, 32768 - 64, 5504)] // 6 splits: 384 blocks, 3 per multiprocessor, one wave
    [InlineData(1 * 8, 32768 - 64, 2048)] // 128 blocks, one per multiprocessor
    [InlineData(1 * 8, 131072 - 64, 4096)] // 256 blocks, two per multiprocessor
    [InlineData(16 * 8, 8192 - 64, 4096)] // 2 splits: 256 blocks
    [InlineData(1 * 8, 4032, 1024)]
    public void SplitsFillOneWaveEvenly(long heads, int tokens, int expected)
    {
        Assert.Equal(expected, CudaPackedKvAttention.DefaultTokensPerSplit(heads, tokens, H200Sms, 3 * H200Sms));
    }

    [Fact]
    public void EveryChosenSplitFitsOneWaveAndAMultipleOf128()
    {
        foreach (long heads in new long[] { 1, 8, 32, 64, 128, 256, 396 })
        {
            foreach (int tokens in new[] { 32, 1000, 4032, 8128, 32704, 131008 })
            {
                int tps = CudaPackedKvAttention.DefaultTokensPerSplit(heads, tokens, H200Sms, 3 * H200Sms);
                Assert.Equal(0, tps % 128);
                long blocks = heads * ((tokens + tps - 1) / tps);
                Assert.True(blocks <= 3 * H200Sms || tps is 2048 or 3072 or 4096, $"{heads} heads x {tokens}: {tps} tokens per split, {blocks} blocks");
            }
        }
    }

    [Fact]
    public void ManyHeadsFallBackToTheFullestLastWave()
    {
        // 256 heads x 32,704 tokens never fit one wave of 396: 4,096 gives 2,048 blocks (5.17 waves), 3,072 gives
        // 2,816 (7.11), 2,048 gives 4,096 (10.34), whose last wave is the fullest.
        int tps = CudaPackedKvAttention.DefaultTokensPerSplit(256, 32704, H200Sms, 3 * H200Sms);
        Assert.Equal(2048, tps);
    }

    [Theory]
    [InlineData(64, 6, 64, 4)] // 12 free slots: the window's blocks wait for the long ones, so short ones (16 rows)
    [InlineData(8, 16, 64, 4)] // 268 free slots: 4 each
    [InlineData(128, 2, 64, 1)] // 140 free slots: one each fits
    [InlineData(8, 16, 20, 2)] // at least 8 rows a block
    [InlineData(8, 16, 5, 1)]
    public void ResidualWindowBlocksUseTheFreeSlots(long heads, int splits, int rows, int expected)
    {
        Assert.Equal(expected, CudaPackedKvAttention.FastResidualBlocks(heads, splits, rows, 3 * H200Sms));
    }
}
