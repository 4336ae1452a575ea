namespace KvAdaQuant.Tests.Cli;

/// <summary><c>/save FILE</c> and <c>/load FILE</c> in <c>kvaq chat</c>: a conversation saved, then loaded by another run, goes on as one run would.</summary>
public sealed class ChatStateCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvaq-chat-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("k4v2")]
    [InlineData("fp16")]
    public void A_conversation_saved_and_loaded_by_another_run_replies_as_one_run_does(string kv)
    {
        string file = Path.Combine(_dir, "chat.kvstate");
        var whole = Chat("Once upon a time\nThe dog\n", kv);
        Assert.Equal(0, whole.Rc);

        var first = Chat($"Once upon a time\n/save {file}\n", kv);
        Assert.True(first.Rc == 0, first.Stderr);
        long size = new FileInfo(file).Length;
        Assert.Contains($"[saved the conversation to {file}: 21 tokens, 2 messages, {size:N0} bytes]", first.Stderr);

        var second = Chat($"/load {file}\nThe dog\n", kv);
        Assert.True(second.Rc == 0, second.Stderr);
        Assert.Contains($"[loaded the conversation from {file}: 21 tokens, 2 messages, {size:N0} bytes, KV cache {kv}; context 21/512]", second.Stderr);
        Assert.Equal(whole.Stdout, first.Stdout + second.Stdout);
    }

    [Fact]
    public void A_bad_save_or_load_is_an_error_that_keeps_the_conversation_and_the_exit_code_says_so()
    {
        string file = Path.Combine(_dir, "k4v2.kvstate");
        Chat($"Once upon a time\n/save {file}\n", "k4v2");
        string garbage = Path.Combine(_dir, "garbage");
        File.WriteAllText(garbage, "not a state");
        string missing = Path.Combine(_dir, "missing");
        var run = Chat($"Once upon a time\n/load {file}\n/load {garbage}\n/load {missing}\n/save\n/save {_dir}\nThe dog\n", "fp16");
        Assert.Equal(1, run.Rc);
        Assert.Contains($"kvaq: error: /load: {file}: the state was saved with another KV plan (k4v2): layer 0 holds K 4:gauto:pt:asym:r0:sink0", run.Stderr);
        Assert.Contains($"kvaq: error: /load: {garbage}: not a kvaq state file (it starts with \"not a st\", not \"KVAQSTAT\")", run.Stderr);
        Assert.Contains($"kvaq: error: /load: {missing}: no such file", run.Stderr);
        Assert.Contains("kvaq: error: /save: /save needs a file: /save FILE", run.Stderr);
        Assert.Contains($"kvaq: error: /save: {_dir}: is a folder; give the state file's path", run.Stderr);
        Assert.Equal(new[] { file, garbage }.Order(), Directory.GetFileSystemEntries(_dir).Order()); // no temporary file left behind

        // The conversation went on from the first reply: the same text as without the failed commands.
        Assert.Equal(Chat("Once upon a time\nThe dog\n", "fp16").Stdout, run.Stdout);
    }

    private static (int Rc, string Stdout, string Stderr) Chat(string input, string kv) =>
        KvaqProcess.RunWithInput(input, "chat", "-m", "stories3M-q80", "-n", "16", "--kv", kv, "--threads", "1", "--ctx", "512");
}
