using KvAdaQuant.Evaluation;
using KvAdaQuant.Evaluation.Datasets;

namespace KvAdaQuant.Tests.Evaluation;

public class Gsm8kAnswerExtractorTests
{
    [Fact]
    public void Every_real_reference_answer_matches_itself_under_both_filters()
    {
        var items = DatasetReader.ReadGsm8k(Fixtures.Path("data", "gsm8k", "test.jsonl"));
        Assert.Equal(1319, items.Count);
        foreach (var item in items)
        {
            Assert.True(Gsm8kAnswerExtractor.IsMatch(Gsm8kAnswerExtractor.Strict(item.Answer), item.Answer), item.Answer);
            Assert.True(Gsm8kAnswerExtractor.IsMatch(Gsm8kAnswerExtractor.Flexible(item.Answer), item.Answer), item.Answer);
        }
    }

    [Fact]
    public void First_real_problem_extracts_18()
    {
        var first = DatasetReader.ReadGsm8k(Fixtures.Path("data", "gsm8k", "test.jsonl"))[0];
        Assert.Equal("18", Gsm8kAnswerExtractor.Strict(first.Answer));
        Assert.Equal("18", Gsm8kAnswerExtractor.Normalize(first.Answer));
    }

    [Theory]
    [InlineData("She makes 9 * 2 = $18 every day.\n#### 18", "18", "18")]
    [InlineData("So the total is $1,234.", "[invalid]", "$1,234.")]
    [InlineData("It costs -5 dollars, then 7", "[invalid]", "7")]
    [InlineData("#### 3.50 and later 4", "3.50", "4")]
    [InlineData("no numbers here", "[invalid]", "[invalid]")]
    public void Filters_follow_lm_eval(string response, string strict, string flexible)
    {
        Assert.Equal(strict, Gsm8kAnswerExtractor.Strict(response));
        Assert.Equal(flexible, Gsm8kAnswerExtractor.Flexible(response));
    }

    [Theory]
    [InlineData("$1,234.", "Work...\n#### 1234", true)]
    [InlineData("1234", "Work...\n#### 1234", true)]
    [InlineData("123", "Work...\n#### 1234", false)]
    [InlineData("[invalid]", "Work...\n#### 1234", false)]
    [InlineData("-7", "x\n#### -7", true)]
    public void Exact_match_normalises_both_sides(string prediction, string reference, bool match) =>
        Assert.Equal(match, Gsm8kAnswerExtractor.IsMatch(prediction, reference));

    [Fact]
    public void Prompt_and_stop_follow_the_task_definition()
    {
        var shot = new Gsm8kItem("What is 1+1?", "1+1=2\n#### 2");
        var item = new Gsm8kItem("What is 2+3?", "#### 5");
        Assert.Equal("Question: What is 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: What is 2+3?\nAnswer:", Gsm8kEvaluator.Prompt([shot], item));
        Assert.Equal(" 2+3=5\n#### 5\n\n", Gsm8kEvaluator.CutAtStop(" 2+3=5\n#### 5\n\nQuestion: next"));
        Assert.Equal(" a", Gsm8kEvaluator.CutAtStop(" a</s>b Question:"));
    }
}
