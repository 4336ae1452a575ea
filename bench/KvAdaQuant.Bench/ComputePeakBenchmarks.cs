using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;

namespace KvAdaQuant.Bench;

/// <summary>
/// Peak multiply-accumulate rate of one core, from register-resident loops of independent accumulators (no memory
/// traffic): FP32 FMA at 512 and 256 bits, and int8 dot products (AVX-VNNI <c>vpdpbusd</c> at 256 bits, the widest
/// .NET 10 exposes; AVX-512BW <c>vpmaddubsw</c> + <c>vpmaddwd</c> at 512 bits). Each benchmark counts one operation per
/// multiply-accumulate (<c>OperationsPerInvoke</c>), so the reported time is nanoseconds per MAC and 1 / Mean is GMAC/s.
/// Compared with the attention benchmark, this bounds how fast any attention kernel can go on these cores regardless of
/// memory: a K4V2 step of the Llama-3.2-1B shape does 512 MACs (4 query heads x 64 dims, for the keys and again for the
/// values) per 56 packed bytes of a token and KV head.
/// </summary>
public class ComputePeakBenchmarks
{
    private const int Iterations = 1 << 20;
    private const int Chains = 12;

    private float _x = 1.0000001f;

    /// <summary>FP32 fused multiply-add, 512-bit vectors (16 MACs per instruction).</summary>
    [Benchmark(OperationsPerInvoke = Iterations * Chains * 16)]
    public float Fp32Fma512()
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            return float.NaN;
        }

        var m = Vector512.Create(_x);
        var a = Vector512.Create(1e-7f);
        Vector512<float> c0 = m, c1 = m, c2 = m, c3 = m, c4 = m, c5 = m, c6 = m, c7 = m, c8 = m, c9 = m, c10 = m, c11 = m;
        for (int i = 0; i < Iterations; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, m, a);
            c1 = Vector512.FusedMultiplyAdd(c1, m, a);
            c2 = Vector512.FusedMultiplyAdd(c2, m, a);
            c3 = Vector512.FusedMultiplyAdd(c3, m, a);
            c4 = Vector512.FusedMultiplyAdd(c4, m, a);
            c5 = Vector512.FusedMultiplyAdd(c5, m, a);
            c6 = Vector512.FusedMultiplyAdd(c6, m, a);
            c7 = Vector512.FusedMultiplyAdd(c7, m, a);
            c8 = Vector512.FusedMultiplyAdd(c8, m, a);
            c9 = Vector512.FusedMultiplyAdd(c9, m, a);
            c10 = Vector512.FusedMultiplyAdd(c10, m, a);
            c11 = Vector512.FusedMultiplyAdd(c11, m, a);
        }

        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    /// <summary>FP32 fused multiply-add, 256-bit vectors (8 MACs per instruction).</summary>
    [Benchmark(OperationsPerInvoke = Iterations * Chains * 8)]
    public float Fp32Fma256()
    {
        var m = Vector256.Create(_x);
        var a = Vector256.Create(1e-7f);
        Vector256<float> c0 = m, c1 = m, c2 = m, c3 = m, c4 = m, c5 = m, c6 = m, c7 = m, c8 = m, c9 = m, c10 = m, c11 = m;
        for (int i = 0; i < Iterations; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(c0, m, a);
            c1 = Vector256.FusedMultiplyAdd(c1, m, a);
            c2 = Vector256.FusedMultiplyAdd(c2, m, a);
            c3 = Vector256.FusedMultiplyAdd(c3, m, a);
            c4 = Vector256.FusedMultiplyAdd(c4, m, a);
            c5 = Vector256.FusedMultiplyAdd(c5, m, a);
            c6 = Vector256.FusedMultiplyAdd(c6, m, a);
            c7 = Vector256.FusedMultiplyAdd(c7, m, a);
            c8 = Vector256.FusedMultiplyAdd(c8, m, a);
            c9 = Vector256.FusedMultiplyAdd(c9, m, a);
            c10 = Vector256.FusedMultiplyAdd(c10, m, a);
            c11 = Vector256.FusedMultiplyAdd(c11, m, a);
        }

        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    /// <summary>Unsigned x signed int8 dot products into int32 (<c>vpdpbusd</c>, 256-bit: 32 MACs per instruction).</summary>
    [Benchmark(OperationsPerInvoke = Iterations * Chains * 32)]
    public int Int8Dpbusd256()
    {
        if (!AvxVnni.IsSupported)
        {
            return -1;
        }

        var u = Vector256.Create((byte)(_x > 1 ? 3 : 2));
        var s = Vector256.Create((sbyte)-1);
        Vector256<int> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (int i = 0; i < Iterations; i++)
        {
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, u, s);
            c1 = AvxVnni.MultiplyWideningAndAdd(c1, u, s);
            c2 = AvxVnni.MultiplyWideningAndAdd(c2, u, s);
            c3 = AvxVnni.MultiplyWideningAndAdd(c3, u, s);
            c4 = AvxVnni.MultiplyWideningAndAdd(c4, u, s);
            c5 = AvxVnni.MultiplyWideningAndAdd(c5, u, s);
            c6 = AvxVnni.MultiplyWideningAndAdd(c6, u, s);
            c7 = AvxVnni.MultiplyWideningAndAdd(c7, u, s);
            c8 = AvxVnni.MultiplyWideningAndAdd(c8, u, s);
            c9 = AvxVnni.MultiplyWideningAndAdd(c9, u, s);
            c10 = AvxVnni.MultiplyWideningAndAdd(c10, u, s);
            c11 = AvxVnni.MultiplyWideningAndAdd(c11, u, s);
        }

        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    /// <summary>
    /// Signed int16 pairs into int32 (<c>vpdpwssd</c>, AVX-VNNI 256-bit: 16 MACs per instruction): the rate an int16
    /// formulation of the value sum (probability weights of 15 bits times widened codes) could reach.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Iterations * Chains * 16)]
    public int Int16Dpwssd256()
    {
        if (!AvxVnni.IsSupported)
        {
            return -1;
        }

        var u = Vector256.Create((short)(_x > 1 ? 3 : 2));
        var s = Vector256.Create((short)-1);
        Vector256<int> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (int i = 0; i < Iterations; i++)
        {
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, u, s);
            c1 = AvxVnni.MultiplyWideningAndAdd(c1, u, s);
            c2 = AvxVnni.MultiplyWideningAndAdd(c2, u, s);
            c3 = AvxVnni.MultiplyWideningAndAdd(c3, u, s);
            c4 = AvxVnni.MultiplyWideningAndAdd(c4, u, s);
            c5 = AvxVnni.MultiplyWideningAndAdd(c5, u, s);
            c6 = AvxVnni.MultiplyWideningAndAdd(c6, u, s);
            c7 = AvxVnni.MultiplyWideningAndAdd(c7, u, s);
            c8 = AvxVnni.MultiplyWideningAndAdd(c8, u, s);
            c9 = AvxVnni.MultiplyWideningAndAdd(c9, u, s);
            c10 = AvxVnni.MultiplyWideningAndAdd(c10, u, s);
            c11 = AvxVnni.MultiplyWideningAndAdd(c11, u, s);
        }

        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    /// <summary>
    /// Unsigned x signed int8 pairs summed to int16 (<c>vpmaddubsw</c>), then pairs of those to int32 (<c>vpmaddwd</c> by 1)
    /// and accumulated: the AVX-512BW route to int8 dot products, 64 MACs per three instructions (plus the add).
    /// </summary>
    [Benchmark(OperationsPerInvoke = Iterations * Chains * 64)]
    public int Int8Maddubs512()
    {
        if (!Avx512BW.IsSupported)
        {
            return -1;
        }

        // The accumulator feeds the unsigned operand, so nothing in the loop is invariant (the JIT could hoist it).
        var s = Vector512.Create((sbyte)-1);
        var one = Vector512.Create((short)1);
        var c0 = Vector512.Create(_x > 1 ? 3 : 2);
        Vector512<int> c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (int i = 0; i < Iterations; i++)
        {
            c0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c0.AsByte(), s), one);
            c1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c1.AsByte(), s), one);
            c2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c2.AsByte(), s), one);
            c3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c3.AsByte(), s), one);
            c4 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c4.AsByte(), s), one);
            c5 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c5.AsByte(), s), one);
            c6 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c6.AsByte(), s), one);
            c7 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c7.AsByte(), s), one);
            c8 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c8.AsByte(), s), one);
            c9 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c9.AsByte(), s), one);
            c10 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c10.AsByte(), s), one);
            c11 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c11.AsByte(), s), one);
        }

        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}
