namespace KvAdaQuant.LlamaCpp;

/// <summary>One intermediate tensor recorded by <see cref="LlamaCppTensorTrace"/>.</summary>
/// <param name="Name">ggml's name (for example <c>attn_norm-0</c>, <c>Qcur-0</c>, <c>kq_soft_max-0</c>, <c>result_output</c>).</param>
/// <param name="Op">The operation that produced it (ggml_op_desc: <c>MUL_MAT</c>, <c>SOFT_MAX</c>, <c>GLU</c>...).</param>
/// <param name="GgmlType">ggml's element type code (0 = F32, 1 = F16, 8 = Q8_0...).</param>
/// <param name="Shape">ne[0..3]: ne[0] is the contiguous (row) dimension.</param>
/// <param name="Values">The values in row order (ne[0] fastest), or null when the tensor is not F32 with contiguous rows.</param>
public sealed record LlamaCppTensor(string Name, string Op, int GgmlType, IReadOnlyList<long> Shape, float[]? Values)
{
    /// <summary>Row <paramref name="index"/> (ne[0] values; rows counted over ne[1], ne[2], ne[3] in that order).</summary>
    public ReadOnlySpan<float> Row(long index)
    {
        if (Values is null)
        {
            throw new InvalidOperationException($"{Name}: values not recorded (ggml type {GgmlType})");
        }

        return Values.AsSpan((int)(index * Shape[0]), (int)Shape[0]);
    }
}
