using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace KvAdaQuant.Evaluation.Datasets;

/// <summary>
/// Readers for the benchmark files in ../shared/data, each producing items with lm-evaluation-harness's prompt templates
/// (target delimiter " " between context and choice):
/// <list type="bullet">
/// <item>ARC (arc_easy, arc_challenge): "Question: {question}\nAnswer:" + " {choice text}";</item>
/// <item>HellaSwag, llama.cpp's 6-line format (context, 0-based label, 4 endings): the context line already joins the activity
/// label and ctx; lm-eval's preprocessing (strip, " [title]" to ". ", drop [bracketed] artefacts, collapse double spaces)
/// is applied to it and to each ending; the file's context keeps ctx_b's case (lm-eval capitalises it);</item>
/// <item>PIQA: "Question: {goal}\nAnswer:" + " {sol}", labels one per line in the labels file;</item>
/// <item>Winogrande (partial scoring): for each option the context is the sentence up to "_" with the option in its place,
/// the continuation " " + the rest of the sentence, the same for both options;</item>
/// <item>BoolQ: "{passage}\nQuestion: {question}?\nAnswer:" + " no" / " yes";</item>
/// <item>LAMBADA (lambada_openai): every word but the last, and " " + the last word;</item>
/// <item>GSM8K: question and answer (the answer ends with "#### number").</item>
/// </list>
/// Every reader fails with a <see cref="DatasetFormatException"/> naming the file and line on malformed or empty input,
/// including an item whose continuation would be empty (an empty choice, ending or solution, a Winogrande blank at the end
/// of the sentence): it has nothing of its own to score, and was scored silently before.
/// </summary>
public static class DatasetReader
{
    private const string EmptyContinuation = "an empty continuation cannot be scored";

    /// <summary>ARC JSONL (<c>question.stem</c>, <c>question.choices[].text/label</c>, <c>answerKey</c>).</summary>
    public static List<MultipleChoiceItem> ReadArc(string path)
    {
        var items = new List<MultipleChoiceItem>();
        foreach (var (e, line) in JsonLines.Read(path))
        {
            var q = JsonLines.Property(e, "question", JsonValueKind.Object, path, line);
            string stem = JsonLines.String(q, "stem", path, line);
            var choices = JsonLines.Property(q, "choices", JsonValueKind.Array, path, line);
            var texts = new List<string>();
            var labels = new List<string>();
            foreach (var c in choices.EnumerateArray())
            {
                texts.Add(JsonLines.String(c, "text", path, line));
                labels.Add(JsonLines.String(c, "label", path, line));
            }

            if (texts.Count < 2)
            {
                throw new DatasetFormatException($"{path}:{line}: has {texts.Count} choice{(texts.Count == 1 ? string.Empty : "s")}; needs at least 2");
            }

            for (int i = 0; i < texts.Count; i++)
            {
                RequireContinuation(texts[i], $"choice {labels[i]}", path, line);
            }

            string key = JsonLines.String(e, "answerKey", path, line);
            int gold = labels.IndexOf(key);
            if (gold < 0)
            {
                throw new DatasetFormatException($"{path}:{line}: answerKey \"{key}\" is not among the {texts.Count} choice labels [{string.Join(",", labels)}]");
            }

            string ctx = $"Question: {stem}\nAnswer:";
            items.Add(new MultipleChoiceItem(Id(e, line), texts.Select(_ => ctx).ToArray(), texts.Select(t => " " + t).ToArray(), texts, gold));
        }

        return items;
    }

    /// <summary>HellaSwag in llama.cpp's format: per task 6 lines (context, label 0..3, four endings).</summary>
    public static List<MultipleChoiceItem> ReadHellaSwag(string path)
    {
        JsonLines.CheckFile(path);
        var lines = File.ReadAllLines(path);
        while (lines.Length > 0 && lines[^1].Length == 0)
        {
            lines = lines[..^1];
        }

        if (lines.Length == 0)
        {
            throw new DatasetFormatException($"{path}: no tasks (the file is empty)");
        }

        if (lines.Length % 6 != 0)
        {
            throw new DatasetFormatException($"{path}: {lines.Length} lines is not a multiple of 6 (context, label, 4 endings per task)");
        }

        var items = new List<MultipleChoiceItem>();
        for (int i = 0; i < lines.Length; i += 6)
        {
            if (!int.TryParse(lines[i + 1], out int label) || label is < 0 or > 3)
            {
                throw new DatasetFormatException($"{path}:{i + 2}: label \"{lines[i + 1]}\" is not 0..3");
            }

            string ctx = HellaSwagPreprocess(lines[i]);
            var endings = Enumerable.Range(2, 4).Select(j => HellaSwagPreprocess(lines[i + j])).ToArray();
            for (int j = 0; j < endings.Length; j++)
            {
                RequireContinuation(endings[j], $"ending {j}", path, i + 3 + j);
            }

            items.Add(new MultipleChoiceItem($"hellaswag-{i / 6}", endings.Select(_ => ctx).ToArray(), endings.Select(x => " " + x).ToArray(), endings, label));
        }

        return items;
    }

    /// <summary>lm-evaluation-harness's HellaSwag text preprocessing.</summary>
    public static string HellaSwagPreprocess(string text)
    {
        text = text.Trim();
        text = text.Replace(" [title]", ". ", StringComparison.Ordinal);
        text = Regex.Replace(text, "\\[.*?\\]", string.Empty);
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    /// <summary>PIQA JSONL (<c>goal</c>, <c>sol1</c>, <c>sol2</c>) with its labels file (0 or 1 per line).</summary>
    public static List<MultipleChoiceItem> ReadPiqa(string path, string labelsPath)
    {
        JsonLines.CheckFile(labelsPath);
        var labels = File.ReadAllLines(labelsPath).Where(l => l.Length > 0).ToArray();
        var items = new List<MultipleChoiceItem>();
        int index = 0;
        foreach (var (e, line) in JsonLines.Read(path))
        {
            if (index >= labels.Length)
            {
                throw new DatasetFormatException($"{labelsPath}: {labels.Length} labels but {path} has more records (line {line})");
            }

            if (labels[index] is not ("0" or "1"))
            {
                throw new DatasetFormatException($"{labelsPath}:{index + 1}: label \"{labels[index]}\" is not 0 or 1");
            }

            string ctx = $"Question: {JsonLines.String(e, "goal", path, line)}\nAnswer:";
            var sols = new[] { JsonLines.String(e, "sol1", path, line), JsonLines.String(e, "sol2", path, line) };
            for (int i = 0; i < sols.Length; i++)
            {
                RequireContinuation(sols[i], $"sol{i + 1}", path, line);
            }

            items.Add(new MultipleChoiceItem(Id(e, line), [ctx, ctx], sols.Select(s => " " + s).ToArray(), sols, labels[index][0] - '0'));
            index++;
        }

        if (index != labels.Length)
        {
            throw new DatasetFormatException($"{labelsPath}: {labels.Length} labels for {index} records in {path}");
        }

        return items;
    }

    /// <summary>Winogrande JSONL (<c>sentence</c> with one "_", <c>option1</c>, <c>option2</c>, <c>answer</c> "1"/"2"), partial scoring.</summary>
    public static List<MultipleChoiceItem> ReadWinogrande(string path)
    {
        var items = new List<MultipleChoiceItem>();
        foreach (var (e, line) in JsonLines.Read(path))
        {
            string sentence = JsonLines.String(e, "sentence", path, line);
            int blank = sentence.IndexOf('_', StringComparison.Ordinal);
            if (blank < 0)
            {
                throw new DatasetFormatException($"{path}:{line}: sentence has no \"_\" blank");
            }

            string rest = sentence[(blank + 1)..].Trim();
            if (rest.Length == 0)
            {
                throw new DatasetFormatException($"{path}:{line}: nothing follows the \"_\" blank; {EmptyContinuation}");
            }

            string answer = JsonLines.String(e, "answer", path, line);
            if (answer is not ("1" or "2"))
            {
                throw new DatasetFormatException($"{path}:{line}: answer \"{answer}\" is not \"1\" or \"2\"");
            }

            var options = new[] { JsonLines.String(e, "option1", path, line), JsonLines.String(e, "option2", path, line) };
            var contexts = options.Select(o => sentence[..blank] + o).ToArray();
            string target = " " + rest;
            items.Add(new MultipleChoiceItem(Id(e, line), contexts, [target, target], contexts, answer[0] - '1'));
        }

        return items;
    }

    /// <summary>BoolQ JSONL (<c>passage</c>, <c>question</c>, and <c>answer</c> or <c>label</c>: true/false, "true"/"false" or 0/1; 1 = yes).</summary>
    public static List<MultipleChoiceItem> ReadBoolQ(string path)
    {
        var items = new List<MultipleChoiceItem>();
        foreach (var (e, line) in JsonLines.Read(path))
        {
            string ctx = $"{JsonLines.String(e, "passage", path, line)}\nQuestion: {JsonLines.String(e, "question", path, line)}?\nAnswer:";
            bool? answer = null;
            if (e.TryGetProperty("answer", out var a) || e.TryGetProperty("label", out a))
            {
                answer = a.ValueKind switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    JsonValueKind.String when a.GetString() is "true" or "True" or "1" => true,
                    JsonValueKind.String when a.GetString() is "false" or "False" or "0" => false,
                    JsonValueKind.Number when a.GetRawText() is "1" => true,
                    JsonValueKind.Number when a.GetRawText() is "0" => false,
                    _ => null,
                };
            }

            if (answer is not bool yes)
            {
                throw new DatasetFormatException($"{path}:{line}: field \"answer\" (or \"label\") is missing or not true/false");
            }

            items.Add(new MultipleChoiceItem(Id(e, line), [ctx, ctx], [" no", " yes"], ["no", "yes"], yes ? 1 : 0));
        }

        return items;
    }

    /// <summary>LAMBADA JSONL (<c>text</c>).</summary>
    public static List<LambadaItem> ReadLambada(string path)
    {
        var items = new List<LambadaItem>();
        foreach (var (e, line) in JsonLines.Read(path))
        {
            string text = JsonLines.String(e, "text", path, line);
            var words = text.Split(' ');
            if (words.Length < 2 || words[^1].Length == 0)
            {
                throw new DatasetFormatException($"{path}:{line}: text needs at least two words and must not end in a space");
            }

            items.Add(new LambadaItem(string.Join(' ', words[..^1]), " " + words[^1]));
        }

        return items;
    }

    /// <summary>GSM8K JSONL (<c>question</c>, <c>answer</c> ending in "#### number").</summary>
    public static List<Gsm8kItem> ReadGsm8k(string path)
    {
        var items = new List<Gsm8kItem>();
        foreach (var (e, line) in JsonLines.Read(path))
        {
            string answer = JsonLines.String(e, "answer", path, line);
            if (!answer.Contains("#### ", StringComparison.Ordinal))
            {
                throw new DatasetFormatException($"{path}:{line}: answer does not end in \"#### <number>\"");
            }

            items.Add(new Gsm8kItem(JsonLines.String(e, "question", path, line), answer));
        }

        return items;
    }

    /// <summary>
    /// Plain text for perplexity and KL: a <c>.jsonl</c> file contributes its records' <c>text</c> fields joined by blank
    /// lines (the C4 sample), any other file its raw content. At most <paramref name="maxChars"/> characters are read (0 = all).
    /// </summary>
    public static string ReadText(string path, int maxChars = 0)
    {
        JsonLines.CheckFile(path);
        string text;
        if (path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
        {
            var sb = new StringBuilder();
            foreach (var (e, line) in JsonLines.Read(path))
            {
                if (sb.Length > 0)
                {
                    sb.Append("\n\n");
                }

                sb.Append(JsonLines.String(e, "text", path, line));
                if (maxChars > 0 && sb.Length >= maxChars)
                {
                    break;
                }
            }

            text = sb.ToString();
        }
        else if (maxChars > 0)
        {
            using var reader = new StreamReader(path);
            var buf = new char[maxChars];
            int n = reader.ReadBlock(buf, 0, maxChars);
            text = CheckText(new string(buf, 0, n), path);
        }
        else
        {
            text = ReadTextFile(path);
        }

        if (maxChars > 0 && text.Length > maxChars)
        {
            text = text[..maxChars];
        }

        if (string.IsNullOrWhiteSpace(text))
        {
            throw new DatasetFormatException($"{path}: the text is empty");
        }

        return text;
    }

    /// <summary>
    /// The whole of a plain text file (UTF-8, or UTF-16/32 with a byte order mark). Binary data (a model, an image or an
    /// archive passed by mistake) is refused naming the file: a NUL character, or more than a tenth of the characters
    /// control characters or bytes that are not UTF-8.
    /// </summary>
    public static string ReadTextFile(string path)
    {
        JsonLines.CheckFile(path);
        return CheckText(File.ReadAllText(path), path);
    }

    /// <summary>Throws <see cref="DatasetFormatException"/> when <paramref name="text"/>, read from <paramref name="path"/>, is binary data rather than text (see <see cref="ReadTextFile"/>).</summary>
    public static string CheckText(string text, string path)
    {
        int nul = text.IndexOf('\0', StringComparison.Ordinal);
        if (nul >= 0)
        {
            throw new DatasetFormatException($"{path}: not a text file (a NUL character at character {nul}: binary data such as a model or an image?)");
        }

        int odd = text.Count(c => c == '\uFFFD' || (char.IsControl(c) && c is not ('\t' or '\n' or '\r' or '\f' or '\v')));
        if (odd > text.Length / 10)
        {
            throw new DatasetFormatException($"{path}: not a text file ({odd} of its {text.Length} characters are control characters or bytes that are not UTF-8: binary data such as a model or an image?)");
        }

        return text;
    }

    /// <summary>Throws unless <paramref name="text"/>, a continuation to score, has something besides white space.</summary>
    private static void RequireContinuation(string text, string what, string path, int line)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new DatasetFormatException($"{path}:{line}: {what} is empty; {EmptyContinuation}");
        }
    }

    private static string Id(JsonElement e, int line) =>
        e.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString()! :
        e.TryGetProperty("qID", out var q) && q.ValueKind == JsonValueKind.String ? q.GetString()! : $"line{line}";
}
