namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>llama.cpp's tokenizer test vectors: inputs in <c>.inp</c> separated by <c>__ggml_vocab_test__</c> lines, ids in <c>.out</c>.</summary>
public static class LlamaCppVocabTestFile
{
    public static List<(string Text, int[] Ids)> Read(string ggufPath)
    {
        const string separator = "\n__ggml_vocab_test__\n";
        var inp = File.ReadAllText(ggufPath + ".inp");
        var parts = inp.Split(separator);
        var inputs = parts[^1].Length == 0 ? parts[..^1] : parts;
        var outLines = File.ReadAllLines(ggufPath + ".out");
        if (outLines.Length != inputs.Length)
        {
            throw new InvalidDataException($"{ggufPath}: {inputs.Length} inputs but {outLines.Length} expected outputs");
        }

        var cases = new List<(string, int[])>();
        for (int i = 0; i < inputs.Length; i++)
        {
            var ids = outLines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            cases.Add((inputs[i], ids));
        }

        return cases;
    }
}
