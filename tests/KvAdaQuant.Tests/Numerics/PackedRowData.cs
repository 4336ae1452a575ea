using System.Runtime.InteropServices;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>Pinned packed rows and parameters for the attention kernels' tests (with the 128 bytes of padding the vector kernels may read).</summary>
internal sealed unsafe class PackedRowData : IDisposable
{
    private readonly GCHandle _codes;
    private readonly GCHandle _params;
    private readonly GCHandle _tiles;

    public PackedRowData(int count, int hd, int bits, int g, bool symmetric)
    {
        Codes = new byte[count * hd * bits / 8];
        Params = new ushort[(count * (hd / g) * (symmetric ? 1 : 2)) + 64];
        Tiles = new byte[KeyTiles.Bytes(count, hd * bits / 8)];
        _codes = GCHandle.Alloc(Codes, GCHandleType.Pinned);
        _params = GCHandle.Alloc(Params, GCHandleType.Pinned);
        _tiles = GCHandle.Alloc(Tiles, GCHandleType.Pinned);
        float step = 1, offset = symmetric ? -((1 << bits) / 2 - 1) : 0;
        Rows = new PackedRows((byte*)_codes.AddrOfPinnedObject(), (ushort*)_params.AddrOfPinnedObject(), count, hd, bits, g, symmetric, step, offset);
    }

    public byte[] Codes { get; }

    public ushort[] Params { get; }

    public PackedRows Rows { get; }

    /// <summary>The codes in <see cref="KeyTiles"/> as of the last <see cref="Tiled"/>.</summary>
    public byte[] Tiles { get; }

    /// <summary>The same rows in <see cref="KeyTiles"/> (the int8 score kernel's layout), copied from <see cref="Codes"/> now.</summary>
    public PackedRows Tiled()
    {
        int rb = Rows.RowBytes;
        byte* tiles = (byte*)_tiles.AddrOfPinnedObject();
        for (int t = 0; t < Rows.Count; t++)
        {
            KeyTiles.WriteRow(tiles, t, rb, Codes.AsSpan(t * rb, rb));
        }

        return new PackedRows(tiles, Rows.Params, Rows.Count, Rows.HeadDim, Rows.Bits, Rows.GroupChannels, Rows.Symmetric, Rows.SymStep, Rows.SymOffset, tiled: true);
    }

    /// <summary>
    /// Random codes and FP16 parameters: steps (symmetric scales, asymmetric a) in [-0.2, 1.8), or [0, 2) with
    /// <paramref name="nonNegativeSteps"/> (as the quantizers make them); asymmetric offsets in [-1, 1).
    /// </summary>
    public static PackedRowData Random(Random rng, int count, int hd, int bits, int g, bool symmetric, bool nonNegativeSteps = false)
    {
        var data = new PackedRowData(count, hd, bits, g, symmetric);
        rng.NextBytes(data.Codes);
        int np = hd / g * (symmetric ? 1 : 2);
        for (int i = 0; i < count * np; i++)
        {
            bool step = symmetric || i % 2 == 0;
            double low = step ? (nonNegativeSteps ? 0 : 0.2) : 1;
            data.Params[i] = BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - low));
        }

        return data;
    }

    public void Dispose()
    {
        _codes.Free();
        _params.Free();
        _tiles.Free();
    }
}
