using KvAdaQuant.Cli.Serve;

namespace KvAdaQuant.Tests.Serve;

/// <summary><see cref="StopTextFilter"/>: OpenAI's stop sequences over streamed pieces, cut at the first occurrence and held back while undecided.</summary>
public class StopTextFilterTests
{
    [Theory]
    [InlineData(new[] { "Hel", "lo wo", "rld" }, new[] { "o w" }, new[] { "Hel", "l", "" }, "Hell", true)]
    [InlineData(new[] { "xa", "b", "c" }, new[] { "ab", "b" }, new[] { "x", "", "" }, "x", true)]
    [InlineData(new[] { "xa", "bd" }, new[] { "abc" }, new[] { "x", "abd" }, "xabd", false)]
    [InlineData(new[] { "one", " two" }, new string[0], new[] { "one", " two" }, "one two", false)]
    [InlineData(new[] { "stop", "more" }, new[] { "stop" }, new[] { "", "" }, "", true)]
    public void Pieces_are_cut_before_the_first_stop_and_held_back_while_they_could_begin_one(string[] pieces, string[] stops, string[] emitted, string text, bool stopped)
    {
        var filter = new StopTextFilter(stops);
        Assert.Equal(emitted, pieces.Select(filter.Push));
        Assert.Equal(stopped, filter.Stopped);
        Assert.Equal(string.Empty, filter.Flush());
        Assert.Equal(text, filter.Text);
    }

    [Fact]
    public void Text_held_back_at_the_end_is_released_by_flush()
    {
        var filter = new StopTextFilter(["abc"]);
        Assert.Equal("x", filter.Push("xab"));
        Assert.Equal("ab", filter.Flush());
        Assert.Equal("xab", filter.Text);
        Assert.False(filter.Stopped);
    }

    [Fact]
    public void An_empty_stop_text_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new StopTextFilter(["x", string.Empty]));
    }
}
