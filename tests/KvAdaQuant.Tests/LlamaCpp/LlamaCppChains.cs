using LLama.Native;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>What the comparisons with llama.cpp's native sampler chains share.</summary>
internal static class LlamaCppChains
{
    /// <summary>The whole model of <paramref name="gguf"/> on the CPU (grammar and DRY samplers read its vocabulary and training context).</summary>
    public static SafeLlamaModelHandle LoadModel(string gguf)
    {
        var p = new LLama.Common.ModelParams(gguf) { GpuLayerCount = 0 };
        LLama.Extensions.IModelParamsExtensions.ToLlamaModelParams(p, out var native);
        return SafeLlamaModelHandle.LoadFromFile(gguf, native);
    }

    /// <summary>The tokens the chain leaves a finite logit, from logits all 0, in id order.</summary>
    public static int[] Allowed(SafeLLamaSamplerChainHandle chain, int vocab)
    {
        var array = LLamaTokenDataArray.Create(new float[vocab]);
        using (LLamaTokenDataArrayNative.Create(array, out var native))
        {
            chain.Apply(ref native);
            return [.. native.Data.ToArray().Where(d => !float.IsNegativeInfinity(d.Logit)).Select(d => (int)d.ID).Order()];
        }
    }

    /// <summary>Whether the bytes end on a character boundary (the last lead byte's character has all its bytes).</summary>
    public static bool Utf8Whole(List<byte> bytes)
    {
        int i = bytes.Count - 1;
        while (i >= 0 && (bytes[i] & 0xC0) == 0x80)
        {
            i--;
        }

        if (i < 0)
        {
            return true;
        }

        int need = bytes[i] switch { < 0x80 => 1, >= 0xF0 => 4, >= 0xE0 => 3, _ => 2 };
        return bytes.Count - i >= need;
    }
}
