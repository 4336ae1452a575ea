using System.Globalization;
using System.Security.Cryptography;
using KvAdaQuant.Model;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// What identifies a model to a saved KV state: its shape and settings, a SHA-256 of the tokenizer's vocabulary (every
/// token's bytes, BOS and EOS) and one of some weights (token embedding rows 0, 1 and the last, the first layer's
/// attention norm, the last layer's feed-forward norm and the final norm, as floats). As named text fields, so that a
/// mismatch names the field.
/// </summary>
public sealed class ModelFingerprint
{
    /// <summary>Fields compared, in order.</summary>
    public static readonly IReadOnlyList<string> FieldNames =
    [
        "architecture", "dim", "hidden_dim", "layers", "heads", "kv_heads", "head_dim", "vocab_size", "context_length",
        "norm_eps", "rope_theta", "rope_layout", "rope_scaling", "tied_embeddings", "bos", "eos", "vocabulary_sha256", "weights_sha256",
    ];

    private ModelFingerprint(string model, IReadOnlyList<KeyValuePair<string, string>> fields)
    {
        Model = model;
        Fields = fields;
    }

    /// <summary>The model's file name (informative, not compared).</summary>
    public string Model { get; }

    /// <summary>Name and value of every field.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Fields { get; }

    /// <summary>The fingerprint of <paramref name="model"/> with <paramref name="tokenizer"/> (null: the vocabulary hash is empty).</summary>
    public static ModelFingerprint Of(LlamaModel model, ITokenizer? tokenizer)
    {
        var c = model.Config;
        string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);
        string I(int v) => v.ToString(CultureInfo.InvariantCulture);
        var values = new[]
        {
            c.Architecture, I(c.Dim), I(c.HiddenDim), I(c.Layers), I(c.Heads), I(c.KvHeads), I(c.HeadDim), I(c.VocabSize), I(c.ContextLength),
            F(c.NormEps), F(c.RopeTheta), c.RopeLayout.ToString(), c.RopeScaling is { } rs ? $"{F(rs.Factor)}/{F(rs.LowFreqFactor)}/{F(rs.HighFreqFactor)}/{I(rs.OriginalContextLength)}" : "none",
            c.TiedEmbeddings ? "true" : "false", I(c.BosToken), I(c.EosToken), tokenizer is null ? "none" : VocabularyHash(tokenizer), WeightsHash(model),
        };
        return new(Path.GetFileName(model.Path), FieldNames.Zip(values, (n, v) => KeyValuePair.Create(n, v)).ToArray());
    }

    /// <summary>Null when <paramref name="saved"/> describes the same model, else the first field that differs, with both values.</summary>
    public string? Difference(ModelFingerprint saved)
    {
        var theirs = saved.Fields.ToDictionary(f => f.Key, f => f.Value);
        foreach (var (name, value) in Fields)
        {
            string other = theirs.GetValueOrDefault(name, "(missing)");
            if (other != value)
            {
                return $"the state was saved with another model ({saved.Model}): {name} is {other} in the file but {value} in {Model}";
            }
        }

        return null;
    }

    /// <summary>Writes the fields: their count, then name and value strings (the model's file name first, as field "model").</summary>
    internal void Write(KvCache.KvStateWriter writer)
    {
        writer.WriteInt32(Fields.Count + 1);
        writer.WriteString("model");
        writer.WriteString(Model);
        foreach (var (name, value) in Fields)
        {
            writer.WriteString(name);
            writer.WriteString(value);
        }
    }

    /// <summary>Reads what <see cref="Write"/> wrote.</summary>
    internal static ModelFingerprint Read(KvCache.KvStateReader reader)
    {
        reader.Section = "model fingerprint";
        long at = reader.Position;
        int count = reader.ReadInt32();
        if (count is < 1 or > 256)
        {
            throw new InvalidDataException($"{reader.Source}: corrupt state file: {count} model fields at offset {at:N0} (1..256 allowed)");
        }

        string model = "(unnamed)";
        var fields = new List<KeyValuePair<string, string>>();
        for (int i = 0; i < count; i++)
        {
            string name = reader.ReadString("a model field name", 256);
            string value = reader.ReadString($"model field {name}");
            if (name == "model")
            {
                model = value;
            }
            else
            {
                fields.Add(KeyValuePair.Create(name, value));
            }
        }

        return new(model, fields);
    }

    /// <summary>The value of field <paramref name="name"/> as an int, or an <see cref="InvalidDataException"/>.</summary>
    internal int Int(string name, string source)
    {
        string? v = Fields.FirstOrDefault(f => f.Key == name).Value;
        return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0
            ? n
            : throw new InvalidDataException($"{source}: corrupt state file: model field {name} is '{v ?? "(missing)"}', not a positive integer");
    }

    private static string VocabularyHash(ITokenizer tokenizer)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> n = stackalloc byte[4];
        foreach (int v in new[] { tokenizer.VocabSize, tokenizer.BosToken, tokenizer.EosToken })
        {
            BitConverter.TryWriteBytes(n, v);
            hash.AppendData(n);
        }

        for (int t = 0; t < tokenizer.VocabSize; t++)
        {
            var bytes = tokenizer.DecodeBytes(-1, t);
            BitConverter.TryWriteBytes(n, bytes.Length);
            hash.AppendData(n);
            hash.AppendData(bytes);
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static string WeightsHash(LlamaModel model)
    {
        var w = model.Weights;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var row = new float[w.TokenEmbedding.Cols];
        foreach (int r in new[] { 0, Math.Min(1, w.TokenEmbedding.Rows - 1), w.TokenEmbedding.Rows - 1 })
        {
            w.TokenEmbedding.DequantizeRow(r, row);
            hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(row.AsSpan()));
        }

        foreach (var norm in new[] { w.Layers[0].AttentionNorm, w.Layers[^1].FfnNorm, w.FinalNorm })
        {
            hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(norm.AsSpan()));
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
