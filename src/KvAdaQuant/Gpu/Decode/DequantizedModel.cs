using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// A copy of a model with every weight matrix dequantized to F32: the CPU reference for GPU runs that keep Q8_0/Q4_0
/// weights, whose kernels multiply the exact dequantized values (code x scale) with FP32 activations, where the CPU
/// engine on the quantized file rounds the activations to 8 bits first (as ggml does). Small models only.
/// </summary>
public static unsafe class DequantizedModel
{
    /// <summary>Creates the F32 copy (it owns its memory; dispose it).</summary>
    public static LlamaModel Create(LlamaModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var owned = new List<IDisposable>();
        ModelWeights w = model.Weights;
        WeightMatrix F32(WeightMatrix m)
        {
            var buffer = new NativeBuffer(4L * m.Rows * m.Cols);
            owned.Add(buffer);
            var copy = new WeightMatrix(m.Name, GgmlType.F32, m.Rows, m.Cols, buffer.Pointer);
            var row = new float[m.Cols];
            for (int r = 0; r < m.Rows; r++)
            {
                m.DequantizeRow(r, row);
                row.CopyTo(buffer.AsSpan<float>((long)r * m.Cols, m.Cols));
            }

            return copy;
        }

        WeightMatrix embedding = F32(w.TokenEmbedding);
        WeightMatrix output = ReferenceEquals(w.Output, w.TokenEmbedding) ? embedding : F32(w.Output);
        LayerWeights[] layers = w.Layers.Select(l => new LayerWeights
        {
            AttentionNorm = l.AttentionNorm,
            Wq = F32(l.Wq),
            Wk = F32(l.Wk),
            Wv = F32(l.Wv),
            Wo = F32(l.Wo),
            Bq = l.Bq,
            Bk = l.Bk,
            Bv = l.Bv,
            FfnNorm = l.FfnNorm,
            W1 = F32(l.W1),
            W2 = F32(l.W2),
            W3 = F32(l.W3),
        }).ToArray();
        var weights = new ModelWeights(embedding, layers, w.FinalNorm, output, owned) { RopeFrequencyFactors = w.RopeFrequencyFactors };
        return new LlamaModel(model.Path, model.Format + " dequantized to F32", model.Config, weights, model.Tokenizer);
    }
}
