using KvAdaQuant.Evaluation.Datasets;

namespace KvAdaQuant.Tests.Evaluation;

public class DatasetReaderTests
{
    private static string Data(params string[] parts) => Fixtures.Path(["data", .. parts]);

    [Fact]
    public void Real_files_read_with_their_documented_counts()
    {
        Assert.Equal(2376, DatasetReader.ReadArc(Data("arc", "ARC-Easy-Test.jsonl")).Count);
        Assert.Equal(1172, DatasetReader.ReadArc(Data("arc", "ARC-Challenge-Test.jsonl")).Count);
        Assert.Equal(10042, DatasetReader.ReadHellaSwag(Data("hellaswag", "hellaswag_val_full.txt")).Count);
        Assert.Equal(1838, DatasetReader.ReadPiqa(Data("piqa", "valid.jsonl"), Data("piqa", "valid-labels.lst")).Count);
        Assert.Equal(1267, DatasetReader.ReadWinogrande(Data("winogrande", "dev.jsonl")).Count);
        Assert.Equal(3270, DatasetReader.ReadBoolQ(Data("boolq", "val.jsonl")).Count);
        Assert.Equal(5153, DatasetReader.ReadLambada(Data("lambada", "lambada_test.jsonl")).Count);
    }

    [Fact]
    public void Templates_match_lm_eval()
    {
        var arc = DatasetReader.ReadArc(Data("arc", "ARC-Easy-Test.jsonl"))[0];
        Assert.Equal("Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:", arc.Contexts[0]);
        Assert.Equal(" Sunlight is the source of energy for nearly all ecosystems.", arc.Continuations[0]);
        Assert.Equal(0, arc.Gold);

        var wino = DatasetReader.ReadWinogrande(Data("winogrande", "dev.jsonl"))[0];
        Assert.Equal("Sarah was a much better surgeon than Maria so Sarah", wino.Contexts[0]);
        Assert.Equal("Sarah was a much better surgeon than Maria so Maria", wino.Contexts[1]);
        Assert.Equal(" always got the easier cases.", wino.Continuations[0]);
        Assert.Equal(1, wino.Gold);

        var hs = DatasetReader.ReadHellaSwag(Data("hellaswag", "hellaswag_val_full.txt"))[0];
        Assert.Equal("Roof shingle removal: A man is sitting on a roof. he", hs.Contexts[0]);
        Assert.Equal(" starts pulling up roofing on a roof.", hs.Continuations[3]);
        Assert.Equal(3, hs.Gold);

        var boolq = DatasetReader.ReadBoolQ(Data("boolq", "val.jsonl"))[0];
        Assert.StartsWith("Ethanol fuel -- ", boolq.Contexts[0]);
        Assert.EndsWith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:", boolq.Contexts[0]);
        Assert.Equal([" no", " yes"], boolq.Continuations);

        var lambada = DatasetReader.ReadLambada(Data("lambada", "lambada_test.jsonl"))[0];
        Assert.StartsWith(" ", lambada.Target);
        Assert.DoesNotContain(" ", lambada.Target[1..]);
        Assert.Equal(DatasetReader.ReadText(Data("lambada", "lambada_test.jsonl"), 100)[..50], (lambada.Context + lambada.Target)[..50]);
    }

    [Fact]
    public void HellaSwag_preprocessing_follows_lm_eval() =>
        Assert.Equal("How to cook. Boil water. Stir.", DatasetReader.HellaSwagPreprocess("  How to cook [title] Boil water. [step] Stir.  "));

    [Theory]
    [InlineData("", "empty")]
    [InlineData("{\"goal\": 1}\n", "line1")]
    [InlineData("{not json}\n", ":1: not valid JSON")]
    [InlineData("\n\n[1,2]\n", ":3: expected a JSON object")]
    [InlineData("{\"goal\": \"x\\udc00\"}\n", ":1: the string at $.goal escapes half of a UTF-16 surrogate pair")]
    public void Malformed_jsonl_names_file_and_line(string content, string expected)
    {
        using var dir = new TempDir();
        var path = dir.File("bad.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.ThrowsAny<FormatException>(() => DatasetReader.ReadArc(path));
        Assert.Contains("bad.jsonl", e.Message);
        Assert.Contains(expected.Replace("line1", ":1:"), e.Message);
    }

    [Fact]
    public void Other_malformed_inputs_are_reported()
    {
        using var dir = new TempDir();
        var hs = dir.File("hs.txt");
        File.WriteAllText(hs, "ctx\n1\na\nb\nc\n");
        Assert.Contains("multiple of 6", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadHellaSwag(hs)).Message);
        File.WriteAllText(hs, "ctx\n7\na\nb\nc\nd\n");
        Assert.Contains("hs.txt:2", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadHellaSwag(hs)).Message);

        var piqa = dir.File("p.jsonl");
        var labels = dir.File("l.lst");
        File.WriteAllText(piqa, "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n");
        File.WriteAllText(labels, "0\n");
        Assert.Contains("1 labels", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadPiqa(piqa, labels)).Message);

        var gsm = dir.File("g.jsonl");
        File.WriteAllText(gsm, "{\"question\":\"q\",\"answer\":\"no marker\"}\n");
        Assert.Contains("####", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadGsm8k(gsm)).Message);

        var wino = dir.File("w.jsonl");
        File.WriteAllText(wino, "{\"sentence\":\"no blank\",\"option1\":\"a\",\"option2\":\"b\",\"answer\":\"1\"}\n");
        Assert.Contains("blank", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadWinogrande(wino)).Message);

        var text = dir.File("t.txt");
        File.WriteAllText(text, "  \n");
        Assert.Contains("empty", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadText(text)).Message);
        Assert.Throws<FileNotFoundException>(() => DatasetReader.ReadText(dir.File("missing.txt")));
    }

    [Fact]
    public void Binary_files_are_refused_as_text_naming_the_file()
    {
        // A model, an image or random bytes passed as --data used to be tokenized as text (perplexity 5e9).
        using var dir = new TempDir();
        var png = dir.File("plot.png");
        File.WriteAllBytes(png, [0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10, 0, 0, 0, 13, (byte)'I', (byte)'H', (byte)'D', (byte)'R', 0, 0, 0, 1]);
        Assert.Equal($"{png}: not a text file (a NUL character at character 8: binary data such as a model or an image?)", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadText(png)).Message);
        Assert.Contains("not a text file", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadText(png, 100)).Message);
        Assert.Contains("not a text file", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadTextFile(png)).Message);

        var noise = dir.File("noise.bin");
        File.WriteAllBytes(noise, Enumerable.Range(0, 400).Select(i => (byte)(0x80 + (i * 37 % 0x7f))).ToArray());
        Assert.Matches(@"noise\.bin: not a text file \([0-9]+ of its [0-9]+ characters are control characters or bytes that are not UTF-8", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadText(noise)).Message);

        // Text with a few bytes that are not UTF-8 (Latin-1 accents) and tabs is still text.
        var latin1 = dir.File("latin1.txt");
        File.WriteAllBytes(latin1, [.. "Caf"u8, 0xE9, .. " au lait\tand cr\u00e8me\r\n"u8, .. "once upon a time there was a little girl\n"u8]);
        Assert.StartsWith("Caf", DatasetReader.ReadText(latin1));
    }

    [Fact]
    public void Items_that_cannot_be_scored_name_file_and_line()
    {
        using var dir = new TempDir();
        var arc = dir.File("arc.jsonl");
        string Arc(string choices, string key = "A") => $"{{\"question\":{{\"stem\":\"Q?\",\"choices\":[{choices}]}},\"answerKey\":\"{key}\"}}";
        File.WriteAllText(arc, Arc("{\"text\":\"a\",\"label\":\"A\"},{\"text\":\"b\",\"label\":\"B\"}") + "\n\n" + Arc("{\"text\":\"yes\",\"label\":\"A\"}") + "\n");
        Assert.Equal($"{arc}:3: has 1 choice; needs at least 2", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadArc(arc)).Message);
        File.WriteAllText(arc, Arc("{\"text\":\"a\",\"label\":\"A\"},{\"text\":\"b\",\"label\":\"B\"}", "C") + "\n");
        Assert.Equal($"{arc}:1: answerKey \"C\" is not among the 2 choice labels [A,B]", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadArc(arc)).Message);
        File.WriteAllText(arc, Arc("{\"text\":\"a\",\"label\":\"A\"},{\"text\":\"\",\"label\":\"B\"}") + "\n");
        Assert.Equal($"{arc}:1: choice B is empty; an empty continuation cannot be scored", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadArc(arc)).Message);

        var hs = dir.File("hs.txt");
        File.WriteAllText(hs, "ctx\n0\na\nb\nc\nd\nctx\n1\na\nb\nc\n  [step]  \n");
        Assert.Equal($"{hs}:12: ending 3 is empty; an empty continuation cannot be scored", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadHellaSwag(hs)).Message);

        var piqa = dir.File("p.jsonl");
        var labels = dir.File("l.lst");
        File.WriteAllText(piqa, "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\" \"}\n");
        File.WriteAllText(labels, "0\n");
        Assert.Equal($"{piqa}:1: sol2 is empty; an empty continuation cannot be scored", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadPiqa(piqa, labels)).Message);

        var wino = dir.File("w.jsonl");
        File.WriteAllText(wino, "{\"sentence\":\"It was _ \",\"option1\":\"a\",\"option2\":\"b\",\"answer\":\"1\"}\n");
        Assert.Equal($"{wino}:1: nothing follows the \"_\" blank; an empty continuation cannot be scored", Assert.Throws<DatasetFormatException>(() => DatasetReader.ReadWinogrande(wino)).Message);
    }
}
