namespace KvAdaQuant.Gpu.Decode;

/// <summary>How a weight matrix is held on the GPU (the value is the kernels' type code).</summary>
public enum GpuWeightType
{
    /// <summary>FP16 halves [rows][ld], ld = cols rounded up to 8 (zero padded).</summary>
    F16 = 0,

    /// <summary>Q8_0 repacked: int8 codes [rows][cols] and one FP16 scale per 32 elements [rows][cols / 32].</summary>
    Q8_0 = 1,

    /// <summary>Q4_0 repacked: nibbles [rows][cols / 2] (element 2i low, 2i + 1 high) and FP16 scales [rows][cols / 32]; w = (nibble - 8) * scale.</summary>
    Q4_0 = 2,
}
