using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// Records llama.cpp's intermediate tensors while it evaluates (its <c>cb_eval</c> scheduler callback): every graph node
/// whose name passes the filter, as F32 values with its shape, in evaluation order. Attach it through
/// <see cref="LlamaCppContextOptions.Trace"/>; it is for finding the first operation where two engines part, one
/// <c>llama_decode</c> at a time (call <see cref="Clear"/> between them). Only F32 tensors whose rows are contiguous are
/// copied; others are listed with their type and no values. Not thread-safe against a concurrent decode on the same context.
/// </summary>
public sealed class LlamaCppTensorTrace : IDisposable
{
    // ggml_tensor layout (ggml.h): enum type at 0, buffer at 8, int64 ne[4] at 16, size_t nb[4] at 48.
    private const int NeOffset = 16;
    private const int NbOffset = 48;
    private const int GgmlTypeF32 = 0;

    private readonly Func<string, bool> _filter;
    private readonly List<LlamaCppTensor> _tensors = [];
    private GCHandle _self;
    private unsafe delegate* unmanaged<IntPtr, IntPtr> _getName;
    private unsafe delegate* unmanaged<IntPtr, IntPtr> _opDesc;
    private unsafe delegate* unmanaged<IntPtr, byte> _isContiguous;
    private unsafe delegate* unmanaged<IntPtr, IntPtr, nuint, nuint, void> _tensorGet;

    /// <summary>Records the tensors whose name (for example <c>attn_norm-0</c>, <c>kq_soft_max-3</c>, <c>result_output</c>) passes <paramref name="filter"/>.</summary>
    public LlamaCppTensorTrace(Func<string, bool> filter)
    {
        _filter = filter;
        _self = GCHandle.Alloc(this);
    }

    /// <summary>The tensors recorded since the last <see cref="Clear"/>, in evaluation order.</summary>
    public IReadOnlyList<LlamaCppTensor> Tensors => _tensors;

    /// <summary>The last recorded tensor named <paramref name="name"/>, or null.</summary>
    public LlamaCppTensor? Find(string name) => _tensors.FindLast(t => t.Name == name);

    /// <summary>Forgets the recorded tensors.</summary>
    public void Clear() => _tensors.Clear();

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_self.IsAllocated)
        {
            _self.Free();
        }
    }

    /// <summary>The callback and its user data for <c>llama_context_params.cb_eval</c>; binds ggml's exports on first use.</summary>
    internal unsafe (IntPtr Callback, IntPtr UserData) Bind(string ggmlBaseLibrary)
    {
        if (_getName == null)
        {
            var lib = NativeLibrary.Load(ggmlBaseLibrary);
            _getName = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(lib, "ggml_get_name");
            _opDesc = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(lib, "ggml_op_desc");
            _isContiguous = (delegate* unmanaged<IntPtr, byte>)NativeLibrary.GetExport(lib, "ggml_is_contiguous");
            _tensorGet = (delegate* unmanaged<IntPtr, IntPtr, nuint, nuint, void>)NativeLibrary.GetExport(lib, "ggml_backend_tensor_get");
        }

        delegate* unmanaged<IntPtr, byte, IntPtr, byte> cb = &OnEval;
        return ((IntPtr)cb, GCHandle.ToIntPtr(_self));
    }

    [UnmanagedCallersOnly]
    private static byte OnEval(IntPtr tensor, byte ask, IntPtr userData)
    {
        try
        {
            var trace = (LlamaCppTensorTrace)GCHandle.FromIntPtr(userData).Target!;
            return trace.Observe(tensor, ask != 0) ? (byte)1 : (byte)0;
        }
        catch (Exception)
        {
            // an exception must not unwind through native code; stop evaluating instead (llama_decode then fails).
            return 0;
        }
    }

    private unsafe bool Observe(IntPtr tensor, bool ask)
    {
        string name = Marshal.PtrToStringUTF8(_getName(tensor)) ?? string.Empty;
        if (!_filter(name))
        {
            // when asked: not interested; after evaluation: keep going.
            return !ask;
        }

        if (ask)
        {
            return true;
        }

        var ne = new long[4];
        var nb = new long[4];
        for (int i = 0; i < 4; i++)
        {
            ne[i] = Unsafe.Read<long>((byte*)tensor + NeOffset + (8 * i));
            nb[i] = Unsafe.Read<long>((byte*)tensor + NbOffset + (8 * i));
        }

        int type = Unsafe.Read<int>((void*)tensor);
        string op = Marshal.PtrToStringUTF8(_opDesc(tensor)) ?? string.Empty;
        float[]? values = null;
        if (type == GgmlTypeF32 && nb[0] == 4)
        {
            long count = ne[0] * ne[1] * ne[2] * ne[3];
            values = new float[count];
            if (_isContiguous(tensor) != 0)
            {
                fixed (float* dst = values)
                {
                    _tensorGet(tensor, (IntPtr)dst, 0, (nuint)(count * 4));
                }
            }
            else
            {
                // a strided view: copy row by row (ne[0] contiguous floats each).
                fixed (float* dst = values)
                {
                    long row = 0;
                    for (long i3 = 0; i3 < ne[3]; i3++)
                    {
                        for (long i2 = 0; i2 < ne[2]; i2++)
                        {
                            for (long i1 = 0; i1 < ne[1]; i1++, row++)
                            {
                                long offset = (i1 * nb[1]) + (i2 * nb[2]) + (i3 * nb[3]);
                                _tensorGet(tensor, (IntPtr)(dst + (row * ne[0])), (nuint)offset, (nuint)(ne[0] * 4));
                            }
                        }
                    }
                }
            }
        }

        _tensors.Add(new LlamaCppTensor(name, op, type, ne, values));
        return true;
    }
}
