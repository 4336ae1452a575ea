using KvAdaQuant.Allocation;

namespace KvAdaQuant.Tests.Allocation;

public class LayerNormsReaderTests
{
    private const string Analysis = """
        {"tokens": 8, "layers": [
          {"k": {"frobenius": [3, 4], "spectral": [2, 3.5]}, "v": {"frobenius": [1, 0], "spectral": [0.5, 0]},
           "w_k": {"frobenius": 10, "spectral": 7}, "w_v": {"frobenius": 2, "spectral": 1}},
          {"k": {"frobenius": [6, 8], "spectral": [5, 1]}, "v": {"frobenius": [0, 2], "spectral": [0, 2]},
           "w_k": {"frobenius": 11, "spectral": 8}, "w_v": {"frobenius": 3, "spectral": 2}}]}
        """;

    [Fact]
    public void Reads_analysis_json_activations_combining_heads()
    {
        using var dir = new TempDir();
        var path = Write(dir, "analysis.json", Analysis);
        var f = LayerNormsReader.Read(path, NormScore.Frobenius, NormSource.Activations);
        Assert.Equal(new double[] { 5, 10 }, f.Keys);
        Assert.Equal(new double[] { 1, 2 }, f.Values);
        var s = LayerNormsReader.Read(path, NormScore.Spectral, NormSource.Activations);
        Assert.Equal(new double[] { 3.5, 5 }, s.Keys);
        var w = LayerNormsReader.Read(path, NormScore.Spectral, NormSource.Weights);
        Assert.Equal(new double[] { 7, 8 }, w.Keys);
        Assert.Equal(new double[] { 1, 2 }, w.Values);
    }

    [Theory]
    [InlineData("{", "not valid JSON")]
    [InlineData("[]", "JSON object")]
    [InlineData("{\"layers\": [{\"\\ud800\": 1}]}", "the string at $.layers[0] (a property name) escapes half of a UTF-16 surrogate pair")]
    [InlineData("{\"layers\": []}", "\"layers\"")]
    [InlineData("{\"layers\": [{\"k\": {\"frobenius\": 1}}]}", "layers[0].v.frobenius is missing")]
    [InlineData("{\"w_k\": [1, 2], \"w_v\": [1]}", "one K and one V norm per layer")]
    [InlineData("{\"w_k\": [1, \"a\"], \"w_v\": [1, 2]}", "\"w_k\" holds String")]
    [InlineData("{\"w_k\": [1, -2], \"w_v\": [1, 2]}", "w_k[1] is -2; norms must be finite and non-negative")]
    [InlineData("{\"w_k\": [1, 2], \"w_v\": [1, 1e400]}", "w_v[1] is 1e400; norms must be finite")]
    [InlineData("{\"layers\": [{\"k\": {\"frobenius\": 1, \"whole_frobenius\": \"x\"}, \"v\": {\"frobenius\": 1}}]}", "layers[0].k.whole_frobenius is String, expected a number")]
    [InlineData("{\"layers\": [{\"k\": {\"frobenius\": [3, -4]}, \"v\": {\"frobenius\": 1}}]}", "layers[0].k.frobenius[1] is -4; norms must be finite and non-negative")]
    [InlineData("{\"layers\": [{\"k\": {\"frobenius\": 1}, \"v\": {\"frobenius\": -1}}]}", "layers[0].v.frobenius is -1; norms must be finite and non-negative")]
    [InlineData("{\"layers\": [{\"k\": {\"frobenius\": 1, \"whole_frobenius\": -2}, \"v\": {\"frobenius\": 1}}]}", "layers[0].k.whole_frobenius is -2; norms must be finite and non-negative")]
    public void Malformed_stats_name_the_problem(string json, string expected)
    {
        using var dir = new TempDir();
        var path = Write(dir, "stats.json", json);
        var e = Assert.ThrowsAny<Exception>(() => LayerNormsReader.Read(path, NormScore.Frobenius, NormSource.Activations));
        Assert.Contains(expected, e.Message);
        Assert.Contains("stats.json", e.Message);
    }

    private static string Write(TempDir dir, string name, string text)
    {
        var path = dir.File(name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Missing_file_is_reported()
    {
        var e = Assert.Throws<FileNotFoundException>(() => LayerNormsReader.Read("/nonexistent/a.json", NormScore.Frobenius, NormSource.Activations));
        Assert.Contains("--stats", e.Message);
    }
}
