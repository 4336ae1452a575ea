using System.Text.Json;
using KvAdaQuant.Formats;
using KvAdaQuant.Formats.Safetensors;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Formats;

/// <summary>
/// Writes a llama2.c model as a Hugging Face folder (config.json + safetensors). Q and K rows of each head are
/// reordered from llama2.c's interleaved RoPE pairs (2i, 2i+1) to HF's half-split pairs (i, i + d/2): HF row i is
/// llama2.c row 2i and HF row i + d/2 is llama2.c row 2i + 1, so the HF model computes the same function.
/// </summary>
public static class HfFolderWriter
{
    /// <summary>
    /// Writes a 512-token byte-level <c>tokenizer.json</c> as GPT-2's own is laid out (ByteLevel pre-tokenizer with its regex,
    /// no added tokens): GPT-2's 256 byte characters and the tokens of its first 256 merges, which are ids 256..511.
    /// </summary>
    public static void WriteGpt2SubsetTokenizer(string dir)
    {
        using var g = KvAdaQuant.Formats.Gguf.GgufFile.Open(KvAdaQuant.Tests.Tokenization.LlamaCppVocabTests.VocabPath("ggml-vocab-gpt-2.gguf"));
        var tokens = ((string[])g.Get("tokenizer.ggml.tokens")!)[..512];
        var merges = ((string[])g.Get("tokenizer.ggml.merges")!)[..256];
        for (int r = 0; r < merges.Length; r++)
        {
            Assert.Equal(tokens[256 + r], merges[r].Replace(" ", string.Empty, StringComparison.Ordinal)); // merge r makes token 256 + r
        }

        var json = new
        {
            version = "1.0",
            added_tokens = Array.Empty<object>(),
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            decoder = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
            model = new { type = "BPE", dropout = (object?)null, unk_token = (object?)null, byte_fallback = false, vocab = Enumerable.Range(0, tokens.Length).ToDictionary(i => tokens[i], i => i), merges },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
    }

    public static void Write(string llama2cPath, string dir, string dtype = "F32", int shards = 1, bool writeConfigTie = true, Action<Dictionary<string, object>>? editConfig = null, bool untieOutput = false, bool qkvBias = false)
    {
        using var model = ModelLoader.Load(llama2cPath);
        var c = model.Config;
        var w = model.Weights;
        var tensors = new List<(string Name, long[] Shape, float[] Data)>();
        float[] Rows(WeightMatrix m, int[]? order = null)
        {
            var data = new float[(long)m.Rows * m.Cols];
            for (int r = 0; r < m.Rows; r++)
            {
                m.DequantizeRow(order?[r] ?? r, data.AsSpan(r * m.Cols, m.Cols));
            }

            return data;
        }

        int[] HalfSplitOrder(int heads)
        {
            int hd = c.HeadDim;
            var order = new int[heads * hd];
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < hd / 2; i++)
                {
                    order[(h * hd) + i] = (h * hd) + (2 * i);
                    order[(h * hd) + i + (hd / 2)] = (h * hd) + (2 * i) + 1;
                }
            }

            return order;
        }

        tensors.Add(("model.embed_tokens.weight", [c.VocabSize, c.Dim], Rows(w.TokenEmbedding)));
        for (int i = 0; i < c.Layers; i++)
        {
            var l = w.Layers[i];
            string p = $"model.layers.{i}.";
            tensors.Add((p + "input_layernorm.weight", [c.Dim], l.AttentionNorm));
            tensors.Add((p + "self_attn.q_proj.weight", [c.QDim, c.Dim], Rows(l.Wq, HalfSplitOrder(c.Heads))));
            tensors.Add((p + "self_attn.k_proj.weight", [c.KvDim, c.Dim], Rows(l.Wk, HalfSplitOrder(c.KvHeads))));
            tensors.Add((p + "self_attn.v_proj.weight", [c.KvDim, c.Dim], Rows(l.Wv)));
            tensors.Add((p + "self_attn.o_proj.weight", [c.Dim, c.QDim], Rows(l.Wo)));
            if (qkvBias)
            {
                tensors.Add((p + "self_attn.q_proj.bias", [c.QDim], Enumerable.Range(0, c.QDim).Select(k => (i * 0.1f) + (k * 0.01f)).ToArray()));
                tensors.Add((p + "self_attn.k_proj.bias", [c.KvDim], Enumerable.Range(0, c.KvDim).Select(k => -k * 0.02f).ToArray()));
                tensors.Add((p + "self_attn.v_proj.bias", [c.KvDim], Enumerable.Range(0, c.KvDim).Select(k => k * 0.005f).ToArray()));
            }

            tensors.Add((p + "post_attention_layernorm.weight", [c.Dim], l.FfnNorm));
            tensors.Add((p + "mlp.gate_proj.weight", [c.HiddenDim, c.Dim], Rows(l.W1)));
            tensors.Add((p + "mlp.up_proj.weight", [c.HiddenDim, c.Dim], Rows(l.W3)));
            tensors.Add((p + "mlp.down_proj.weight", [c.Dim, c.HiddenDim], Rows(l.W2)));
        }

        tensors.Add(("model.norm.weight", [c.Dim], w.FinalNorm));
        if (!c.TiedEmbeddings || untieOutput)
        {
            tensors.Add(("lm_head.weight", [c.VocabSize, c.Dim], Rows(w.Output)));
        }

        var weightMap = new Dictionary<string, string>();
        for (int s = 0; s < shards; s++)
        {
            string file = shards == 1 ? "model.safetensors" : $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var writer = new SafetensorsWriter();
            for (int k = s; k < tensors.Count; k += shards)
            {
                writer.Add(tensors[k].Name, tensors[k].Name.EndsWith("norm.weight", StringComparison.Ordinal) ? "F32" : dtype, tensors[k].Shape, tensors[k].Data);
                weightMap[tensors[k].Name] = file;
            }

            writer.Write(Path.Combine(dir, file));
        }

        if (shards > 1)
        {
            File.WriteAllText(Path.Combine(dir, HfModelLoader.IndexFileName), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));
        }

        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["hidden_size"] = c.Dim,
            ["intermediate_size"] = c.HiddenDim,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["num_key_value_heads"] = c.KvHeads,
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.ContextLength,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 10000.0,
            ["hidden_act"] = "silu",
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
        };
        if (writeConfigTie)
        {
            config["tie_word_embeddings"] = c.TiedEmbeddings && !untieOutput;
        }

        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config));
    }
}
