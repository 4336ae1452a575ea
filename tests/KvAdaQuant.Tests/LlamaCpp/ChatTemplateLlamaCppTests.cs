using System.Text;
using KvAdaQuant.Engine;
using KvAdaQuant.LlamaCpp;
using LLama;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>
/// kvaq's built-in chat templates against llama.cpp's own implementations of the same templates
/// (<c>llama_chat_apply_template</c> by name, through LLamaSharp's <c>LLamaTemplate</c>): random conversations (a system
/// message or none, user and assistant turns, contents with spaces and newlines at either end, Unicode), with and
/// without the generation prompt, render to the same text. kvaq's <c>llama2</c> is llama.cpp's <c>llama2-sys-bos</c>
/// variant (<c>&lt;&lt;SYS&gt;&gt;</c> in the first instruction, <c>&lt;s&gt;</c> before each later one; the first BOS
/// is the tokenizer's); llama.cpp's plain <c>llama2</c> writes the system text without the tags. This comparison found
/// kvaq's <c>llama3</c> leaving contents untrimmed, where Meta's template (and llama.cpp's) trims each.
/// </summary>
public class ChatTemplateLlamaCppTests
{
    private static readonly string[] Words = ["Hi", "How are you?", "Tell me a story.", " lead", "trail ", "\nnew line\n", "  two  ", "日本語", "😀", "x\ty", "<b>", "Once upon a time"];

    [LlamaCppTheory]
    [InlineData("chatml")]
    [InlineData("llama3")]
    [InlineData("llama2-sys-bos")]
    public void Random_conversations_render_as_llama_cpp_renders_them(string name)
    {
        LlamaCppRuntime.Load();
        var template = ChatTemplate.Parse(name.StartsWith("llama2", StringComparison.Ordinal) ? "llama2" : name);
        var rng = new Random(name.Length * 7919);
        var failures = new List<string>();
        for (int round = 0; round < 60; round++)
        {
            var messages = new List<ChatMessage>();
            if (rng.Next(2) == 0)
            {
                messages.Add(new ChatMessage("system", Text(rng)));
            }

            int turns = rng.Next(1, 4);
            for (int t = 0; t < turns; t++)
            {
                messages.Add(new ChatMessage("user", Text(rng)));
                if (t < turns - 1 || rng.Next(2) == 0)
                {
                    messages.Add(new ChatMessage("assistant", Text(rng)));
                }
            }

            bool prompt = messages[^1].Role == "user";
            var theirs = new LLamaTemplate(name) { AddAssistant = prompt };
            foreach (var m in messages)
            {
                theirs.Add(m.Role, m.Content);
            }

            string expected = Encoding.UTF8.GetString(theirs.Apply());
            string actual = template.Render(messages, prompt);
            if (expected != actual)
            {
                failures.Add($"{Show(messages)}\n  llama.cpp: {Escape(expected)}\n  kvaq:      {Escape(actual)}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of 60 differ:\n" + string.Join("\n", failures.Take(4)));
    }

    private static string Text(Random rng) => string.Concat(Enumerable.Range(0, rng.Next(1, 4)).Select(_ => Words[rng.Next(Words.Length)]));

    private static string Show(List<ChatMessage> messages) => string.Join(" | ", messages.Select(m => $"{m.Role}: {Escape(m.Content)}"));

    private static string Escape(string s) => s.Replace("\n", "\\n", StringComparison.Ordinal).Replace("\t", "\\t", StringComparison.Ordinal);
}
