using System.Text;
using KvAdaQuant.Tokenization;

namespace KvAdaQuant.Engine;

/// <summary>
/// How a conversation becomes prompt text, for the template families llama.cpp also builds in and detects from a
/// model's Jinja <c>chat_template</c>: <c>chatml</c> (<c>&lt;|im_start|&gt;role\n...&lt;|im_end|&gt;\n</c>), <c>llama3</c>
/// (<c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n...&lt;|eot_id|&gt;</c>), <c>llama2</c>
/// (<c>[INST] &lt;&lt;SYS&gt;&gt;...[/INST] answer&lt;/s&gt;&lt;s&gt;[INST] ...</c>), and <c>none</c>: the messages' texts
/// one after another, for base models (the TinyStories models continue whatever they are given). BOS is not part of the
/// text; the tokenizer adds it before the first turn.
/// </summary>
public sealed class ChatTemplate
{
    private ChatTemplate(string name, string? endOfTurn, params string[] specialTokens)
    {
        Name = name;
        EndOfTurn = endOfTurn;
        SpecialTokens = specialTokens;
    }

    /// <summary>Plain concatenation of the messages' texts (base models).</summary>
    public static ChatTemplate None { get; } = new("none", null);

    /// <summary>ChatML (Qwen, many fine-tunes).</summary>
    public static ChatTemplate ChatMl { get; } = new("chatml", "<|im_end|>", "<|im_start|>", "<|im_end|>");

    /// <summary>Llama 3 / 3.1 / 3.2 instruct.</summary>
    public static ChatTemplate Llama3 { get; } = new("llama3", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>");

    /// <summary>Llama 2 chat.</summary>
    public static ChatTemplate Llama2 { get; } = new("llama2", "</s>", "<s>", "</s>");

    /// <summary>Every template, by name.</summary>
    public static IReadOnlyList<ChatTemplate> All { get; } = [None, ChatMl, Llama3, Llama2];

    /// <summary>The names <see cref="Parse"/> accepts.</summary>
    public static string Names => string.Join(", ", All.Select(t => t.Name));

    /// <summary>The template's name.</summary>
    public string Name { get; }

    /// <summary>The text that ends an assistant turn (generation stops at its token as at EOS), or null for <c>none</c>.</summary>
    public string? EndOfTurn { get; }

    /// <summary>The control tokens the template writes; the tokenizer must have each as one token.</summary>
    public IReadOnlyList<string> SpecialTokens { get; }

    /// <summary>
    /// The id of <see cref="EndOfTurn"/> in <paramref name="tokenizer"/>, or -1 when the template has none, after checking
    /// that every control token the template writes is one token of <paramref name="tokenizer"/>: an
    /// <see cref="ArgumentException"/> names the first that is not.
    /// </summary>
    public int EndOfTurnToken(ITokenizer tokenizer)
    {
        int endOfTurn = -1;
        foreach (var special in SpecialTokens)
        {
            if (tokenizer.Encode(special, addBos: false, parseSpecial: true) is not [int id])
            {
                throw new ArgumentException($"chat template {Name}: the tokenizer has no control token {special} (choose another template, or none)");
            }

            if (special == EndOfTurn)
            {
                endOfTurn = id;
            }
        }

        return endOfTurn;
    }

    /// <summary>The template named <paramref name="name"/> (case-insensitive); an error lists the names.</summary>
    public static ChatTemplate Parse(string name) =>
        All.FirstOrDefault(t => string.Equals(t.Name, name.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown chat template '{name}'; expected one of {Names}");

    /// <summary>
    /// The family of a model's Jinja <c>chat_template</c>, found by the markers it writes (as llama.cpp detects its built-in
    /// templates), or null when it is none of them. A model without a template (null or empty) gets <see cref="None"/>.
    /// </summary>
    public static ChatTemplate? Detect(string? jinja)
    {
        if (string.IsNullOrWhiteSpace(jinja))
        {
            return None;
        }

        if (jinja.Contains("<|im_start|>", StringComparison.Ordinal))
        {
            return ChatMl;
        }

        if (jinja.Contains("<|start_header_id|>", StringComparison.Ordinal) && jinja.Contains("<|eot_id|>", StringComparison.Ordinal))
        {
            return Llama3;
        }

        return jinja.Contains("[INST]", StringComparison.Ordinal) ? Llama2 : null;
    }

    /// <summary>
    /// The text of <paramref name="messages"/>; with <paramref name="addGenerationPrompt"/> followed by what opens the
    /// assistant's reply. Rendering a conversation with one more message only appends text (the rendering of the shorter
    /// one is a prefix), which is what lets a chat feed each turn's new text to the cache it already holds.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            CheckRole(m.Role, Name);
            switch (Name)
            {
                case "chatml":
                    sb.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                    break;
                case "llama3":
                    // Meta's template trims each message's content (as llama.cpp's built-in llama3 does).
                    sb.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(m.Content.Trim()).Append("<|eot_id|>");
                    break;
                case "llama2":
                    RenderLlama2(sb, messages, i);
                    break;
                default:
                    sb.Append(m.Content);
                    break;
            }
        }

        if (addGenerationPrompt)
        {
            sb.Append(Name switch
            {
                "chatml" => "<|im_start|>assistant\n",
                "llama3" => "<|start_header_id|>assistant<|end_header_id|>\n\n",
                _ => string.Empty,
            });
        }

        return sb.ToString();
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    // [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]{answer}</s><s>[INST] {user} [/INST]...: the system message goes
    // into the first instruction; the answer keeps the leading space the model generated after [/INST].
    private static void RenderLlama2(StringBuilder sb, IReadOnlyList<ChatMessage> messages, int i)
    {
        var m = messages[i];
        switch (m.Role)
        {
            case "system":
                break;  // written with the next user message
            case "user":
                bool first = !messages.Take(i).Any(x => x.Role == "user");
                sb.Append(first ? "[INST] " : "<s>[INST] ");
                if (i > 0 && messages[i - 1].Role == "system")
                {
                    sb.Append("<<SYS>>\n").Append(messages[i - 1].Content).Append("\n<</SYS>>\n\n");
                }

                sb.Append(m.Content).Append(" [/INST]");
                break;
            default:
                sb.Append(m.Content).Append("</s>");
                break;
        }
    }

    // Llama 3 also has the ipython role (tool results, ChatToolFormat.Llama3); tool messages go through ChatToolFormat.
    private static void CheckRole(string role, string template)
    {
        if (role is not ("system" or "user" or "assistant") && !(role == "ipython" && template == "llama3"))
        {
            throw new ArgumentException($"chat message role '{role}': expected system, user or assistant (tool messages: render with ChatToolFormat)");
        }
    }
}
