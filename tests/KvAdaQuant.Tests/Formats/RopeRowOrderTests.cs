using KvAdaQuant.Formats;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Formats;

/// <summary>The Q/K row reordering between half-split (Hugging Face) and interleaved (llama2.c, GGUF llama) RoPE.</summary>
public class RopeRowOrderTests
{
    [Theory]
    [InlineData(1, 4)]
    [InlineData(3, 8)]
    [InlineData(4, 64)]
    public void HalfSplitToInterleavedIsLlamaCppsPermute(int heads, int headDim)
    {
        // convert_hf_to_gguf: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2).reshape(w.shape), i.e. element [h, i, j] of the
        // (heads, d/2, 2) result is element [h, j, i] of the (heads, 2, d/2) input: new row h*d + 2i + j is old row h*d + j*d/2 + i.
        var expected = new int[heads * headDim];
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < headDim / 2; i++)
            {
                for (int j = 0; j < 2; j++)
                {
                    expected[(h * headDim) + (2 * i) + j] = (h * headDim) + (j * headDim / 2) + i;
                }
            }
        }

        Assert.Equal(expected, RopeRowOrder.Between(RopeLayout.HalfSplit, RopeLayout.Interleaved, heads, headDim));
    }

    [Fact]
    public void TheTwoDirectionsAreInversesAndSameLayoutIsNoOrder()
    {
        var toHf = RopeRowOrder.Between(RopeLayout.Interleaved, RopeLayout.HalfSplit, 4, 8)!;
        var toGguf = RopeRowOrder.Between(RopeLayout.HalfSplit, RopeLayout.Interleaved, 4, 8)!;
        Assert.Equal([0, 2, 4, 6, 1, 3, 5, 7], toHf[..8]);
        Assert.Equal(Enumerable.Range(0, 32), Enumerable.Range(0, 32).Select(r => toHf[toGguf[r]]));
        Assert.Null(RopeRowOrder.Between(RopeLayout.HalfSplit, RopeLayout.HalfSplit, 4, 8));
        var v = Enumerable.Range(0, 32).Select(i => (float)i).ToArray();
        Assert.Equal(v, RopeRowOrder.Apply(RopeRowOrder.Apply(v, toHf), toGguf));
        Assert.Same(v, RopeRowOrder.Apply(v, null));
    }
}
