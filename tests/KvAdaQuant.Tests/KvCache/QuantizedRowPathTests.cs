using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>
/// The row-at-a-time path of quantized caches reads runs of per-token rows sixteen channels a vector
/// (<c>QuantizedTensorStore.DequantizeRows</c>); a store built without the vector kernels (<c>allowFused: false</c>)
/// dequantizes one row at a time. Rows read back, and attention at head dims the fused kernels do not take, are the
/// same bits in both.
/// </summary>
public class QuantizedRowPathTests
{
    [Theory]
    [InlineData("k4v2", 32)]
    [InlineData("k2v4:sym", 32)]
    [InlineData("k8v8:g16", 48)]
    [InlineData("k4v4:g16:sym:sink3:r5", 32)]
    [InlineData("k2v8:rot", 16)]
    [InlineData("k4v2", 64)]
    [InlineData("k8v2:g32", 128)]
    [InlineData("k3v4", 32)]
    [InlineData("k4v2:g8", 32)]
    public void VectorRowsHaveTheBitsOfOneRowAtATime(string spec, int headDim)
    {
        const int kvHeads = 2, rep = 3, positions = 150;
        var layout = new KvLayout(1, kvHeads, headDim, positions);
        var layerSpec = KvPlan.Parse(spec, 1).Layers[0];
        using var vector = new QuantizedKvStore(layout, layerSpec);
        using var rowByRow = new QuantizedKvStore(layout, layerSpec, allowFused: false);
        var rng = new Random(headDim + spec.Length);
        var k = new float[positions * layout.KvDim];
        var v = new float[k.Length];
        AttentionStepRunner.RandomKeysAndValues(rng, k, v);
        vector.Append(k, v, positions);
        rowByRow.Append(k, v, positions);

        var a = new float[positions * headDim];
        var b = new float[a.Length];
        for (int g = 0; g < kvHeads; g++)
        {
            vector.ReadKeys(g, 0, positions, a);
            rowByRow.ReadKeys(g, 0, positions, b);
            Assert.True(a.AsSpan().SequenceEqual(b), $"{spec}: keys of head {g} differ");
            vector.ReadValues(g, 0, positions, a);
            rowByRow.ReadValues(g, 0, positions, b);
            Assert.True(a.AsSpan().SequenceEqual(b), $"{spec}: values of head {g} differ");
        }

        // Where the fused kernels take the shape (head dim 64 and 128), attention differs by design; elsewhere both
        // stores attend row by row.
        if (headDim % 64 != 0)
        {
            var q = Enumerable.Range(0, rep * headDim).Select(i => MathF.Sin(i * 0.37f)).ToArray();
            var scores = new float[rep * positions];
            var oa = new float[rep * headDim];
            var ob = new float[rep * headDim];
            foreach (int length in new[] { 1, 17, positions })
            {
                vector.Attend(1, q, rep, length, oa, scores);
                rowByRow.Attend(1, q, rep, length, ob, scores);
                Assert.True(oa.AsSpan().SequenceEqual(ob), $"{spec}: attention over {length} positions differs");
            }
        }
    }
}
