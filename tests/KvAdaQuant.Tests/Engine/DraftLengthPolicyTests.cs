using KvAdaQuant.Engine.Speculative;

namespace KvAdaQuant.Tests.Engine;

/// <summary>
/// The adaptive draft length: the count with the most tokens a second under the measured pass times and kept share,
/// short on a compute-bound CPU, long where a pass costs the same for any few positions, none where guesses are lost.
/// </summary>
public class DraftLengthPolicyTests
{
    // Teaches the policy pass times T(n) = cost(n) and a kept share alpha.
    private static DraftLengthPolicy Trained(Func<int, double> cost, double alpha, int max = 8)
    {
        var policy = new DraftLengthPolicy(max);
        for (int n = 1; n <= max + 1; n++)
        {
            policy.Observe(n, cost(n));
        }

        // Batches of 20 guesses that keep alpha / (1 - alpha) before a refusal: kept / (kept + refusals) -> alpha.
        for (int i = 0; i < 200; i++)
        {
            policy.Kept(20, (int)Math.Round(alpha / (1 - alpha)));
        }

        return policy;
    }

    [Fact]
    public void A_plain_step_comes_first()
    {
        var policy = new DraftLengthPolicy(8);
        Assert.Equal(0, policy.Choose(8));
        policy.Observe(1, 0.03);
        Assert.Equal(1.25 * 0.03, policy.Time(2), 12); // a quarter of a step a position while one size is known
        Assert.True(policy.Choose(8) > 0); // so with the prior alpha 0.5 a guess is tried at once
    }

    [Fact]
    public void On_this_cpus_costs_one_guess_wins_at_the_kept_share_of_prompt_lookup_and_two_at_nine_in_ten()
    {
        // Measured with SpeculativeBatchBenchmarks on a quiet host (1B shape, Q8_0, two threads, session 40): 32.85, 37.94,
        // 53.24, 90.45, 135.48 ms for 1, 2, 3, 5, 9 positions (linear between them).
        double[] at = [1, 2, 3, 5, 9];
        double[] ms = [32.85, 37.94, 53.24, 90.45, 135.48];
        double Cost(int n)
        {
            int i = Array.FindLastIndex(at, x => x <= n);
            return (i == at.Length - 1 ? ms[i] : ms[i] + ((ms[i + 1] - ms[i]) * (n - at[i]) / (at[i + 1] - at[i]))) / 1000;
        }

        // About half the guesses kept, as prompt lookup on the synthetic 1B file: 1.5 tokens in 1.15 steps beats a plain
        // step, and a second guess (1.75 tokens in 1.62 steps) does not.
        var half = Trained(Cost, 0.5);
        Assert.Equal(0.5, half.Alpha, 2);
        Assert.Equal(1, half.Choose(8));

        // Nine in ten kept: two guesses (2.71 tokens in 1.62 steps) just beat one (1.9 in 1.15) and three.
        var most = Trained(Cost, 0.9);
        Assert.Equal(0.9, most.Alpha, 2);
        Assert.Equal(2, most.Choose(8));
        Assert.Equal(1, most.Choose(1));
        Assert.Equal(0, most.Choose(0));
    }

    [Fact]
    public void Where_positions_are_nearly_free_long_drafts_win()
    {
        var policy = Trained(n => 0.010 + (0.0002 * (n - 1)), 0.9);
        Assert.Equal(8, policy.Choose(8));
        Assert.Equal(5, policy.Choose(5));

        // Fewer kept: shorter.
        Assert.InRange(Trained(n => 0.010 + (0.0002 * (n - 1)), 0.5).Choose(8), 2, 7);
    }

    [Fact]
    public void A_draft_models_time_a_guess_shortens_the_draft_and_can_rule_it_out()
    {
        // Flat passes and 90 % kept: without a draft cost the longest draft wins.
        Func<int, double> flat = n => 0.010 + (0.0002 * (n - 1));
        var free = Trained(flat, 0.9);
        free.ObserveDraft(8, 0);
        Assert.Equal(0, free.DraftTime);
        Assert.Equal(8, free.Choose(8));

        // A draft model at a fifth of a target step a guess: the tail of a long draft no longer pays.
        var cheap = Trained(flat, 0.9);
        cheap.ObserveDraft(4, 4 * 0.002);
        Assert.Equal(0.002, cheap.DraftTime, 12);
        int k = cheap.Choose(8);
        Assert.InRange(k, 1, 7);

        // One as slow as the target: 1 + 0.9 tokens for 2 steps' time loses to a plain step.
        var dear = Trained(flat, 0.9);
        dear.ObserveDraft(4, 4 * 0.010);
        Assert.Equal(0, dear.Choose(8));

        // A draft that made no guess costs its time as one guess.
        var failing = new DraftLengthPolicy(8);
        failing.ObserveDraft(0, 0.5);
        Assert.Equal(0.5, failing.DraftTime, 12);
    }

    [Fact]
    public void When_guesses_are_lost_none_are_asked_for_but_one_now_and_then_less_often_while_those_lose_too()
    {
        List<int> Tries(double draftSeconds)
        {
            var lost = Trained(n => 0.010 + (0.002 * (n - 1)), 0.0);
            lost.ObserveDraft(1, draftSeconds);
            var tries = new List<int>();
            for (int step = 1; step <= 400; step++)
            {
                int k = lost.Choose(8);
                if (k > 0)
                {
                    Assert.Equal(1, k);
                    tries.Add(step);
                    lost.Kept(1, 0);
                }
            }

            return tries;
        }

        // A draft model (asking costs a decode step of its own): after 8 plain steps, then 16 and 32, the gaps doubling
        // while the tries lose, and after three lost in a row no more.
        Assert.Equal([8, 24, 56], Tries(0.005));

        // Prompt lookup (asking costs microseconds; a lost try only T(2) - T(1)): the gaps stop at 16, and it goes on.
        Assert.Equal([8, 24, .. Enumerable.Range(0, 23).Select(i => 40 + (16 * i))], Tries(2e-6));

        // A try that keeps its guess brings the gap back to 8 (and raises alpha).
        var policy = Trained(n => 0.010 + (0.002 * (n - 1)), 0.0);
        int first = Enumerable.Range(1, 8).First(_ => policy.Choose(8) > 0);
        policy.Kept(1, 1);
        Assert.Equal(8, first);
        Assert.Contains(Enumerable.Range(1, 8).Select(_ => policy.Choose(8)).ToArray(), k => k > 0);
    }

    [Fact]
    public void A_try_with_nothing_to_guess_is_made_again_at_the_next_step_when_asking_is_cheap()
    {
        DraftLengthPolicy Lost(double draftSeconds)
        {
            var p = Trained(n => 0.010 + (0.002 * (n - 1)), 0.0);
            p.ObserveDraft(1, draftSeconds);
            return p;
        }

        // Prompt lookup (asking costs microseconds): the try at step 8 finds nothing, so step 9 tries again, and so on
        // until the source has a guess; only then does the gap start over.
        var cheap = Lost(2e-6);
        Assert.Equal(8, Enumerable.Range(1, 8).First(_ => cheap.Choose(8) > 0));
        cheap.NothingDrafted();
        Assert.Equal(1, cheap.Choose(8));
        cheap.NothingDrafted();
        Assert.Equal(1, cheap.Choose(8));
        cheap.Kept(1, 0);
        Assert.Equal(16, Enumerable.Range(1, 16).First(_ => cheap.Choose(8) > 0)); // the back-off after a lost try

        // A draft model (each asking is a decode step of its own and more): a try that found nothing is a lost one, so the
        // gap doubles.
        var dear = Lost(0.005);
        Assert.Equal(8, Enumerable.Range(1, 8).First(_ => dear.Choose(8) > 0));
        dear.NothingDrafted();
        Assert.Equal(16, Enumerable.Range(1, 16).First(_ => dear.Choose(8) > 0));
    }

    [Fact]
    public void A_try_is_judged_by_its_time_and_a_draft_whose_tries_keep_losing_is_not_asked_again()
    {
        // T(1) = 10 ms, T(2) = 12 ms, and no guess kept so far, so a guess is asked for only after 8 idle steps.
        DraftLengthPolicy Policy() => Trained(n => 0.010 + (0.002 * (n - 1)), 0.0);
        int NextTry(DraftLengthPolicy p, int within) => Enumerable.Range(1, within).FirstOrDefault(_ => p.Choose(8) > 0);

        // A try that keeps its guess but whose draft model took 15 ms (catching up on the tokens since the last try):
        // 2 tokens in 27 ms against 20 ms plain: lost, the gap doubles.
        var p = Policy();
        Assert.Equal(8, NextTry(p, 8));
        p.ObserveDraft(1, 0.015);
        p.Observe(2, 0.012);
        p.Kept(1, 1);
        Assert.Equal(16, NextTry(p, 16));

        // The same guess kept with a 5 ms draft: 2 tokens in 17 ms, a win: the gap is back to 8.
        p.ObserveDraft(1, 0.005);
        p.Observe(2, 0.012);
        p.Kept(1, 1);
        Assert.Equal(8, NextTry(p, 8));

        // Tries that keep losing, kept guesses or not: 16 and 32 steps apart, then (the third loss in a row) never again.
        var gaps = new List<int>();
        for (int i = 0; i < 8; i++)
        {
            p.ObserveDraft(1, 0.015);
            p.Observe(2, 0.012);
            p.Kept(1, i % 2);
            int gap = NextTry(p, 500);
            if (gap == 0)
            {
                break;
            }

            gaps.Add(gap);
        }

        Assert.Equal([16, 32], gaps);
        Assert.True(p.GivenUp);

        // Nothing-drafted tries of a draft model lose too.
        var q = Policy();
        q.ObserveDraft(1, 0.005);
        var tries = new List<int>();
        for (int step = 1; step <= 400; step++)
        {
            if (q.Choose(8) > 0)
            {
                tries.Add(step);
                q.ObserveDraft(0, 0.005);
                q.NothingDrafted();
            }
        }

        Assert.Equal([8, 24, 56], tries);
    }

    [Fact]
    public void Unmeasured_sizes_are_interpolated_and_extended()
    {
        var policy = new DraftLengthPolicy(8);
        policy.Observe(1, 1.0);
        Assert.Equal(1.25, policy.Time(2), 12); // a quarter of a step a position from one measured size
        Assert.Equal(2.0, policy.Time(5), 12);
        policy.Observe(3, 2.0);
        Assert.Equal(1.5, policy.Time(2), 12); // between 1 and 3
        Assert.Equal(3.0, policy.Time(5), 12); // along the slope of 1..3
        policy.Observe(2, 1.2);
        Assert.Equal(2.8, policy.Time(4), 12); // along the slope of 2..3

        // A size's first pass (compilation) gives way to its second; then the median of the last 5, so one slow pass (a busy
        // host) does not stick, and a size timed often is not flattered against one timed rarely.
        policy.Observe(5, 7.0);
        Assert.Equal(7.0, policy.Time(5), 12);
        policy.Observe(5, 2.5);
        Assert.Equal(2.5, policy.Time(5), 12);
        policy.Observe(2, 1.5);
        Assert.Equal(1.5, policy.Time(2), 12); // 1.2 was the first
        policy.Observe(2, 1.4);
        policy.Observe(2, 9.0);
        Assert.Equal(1.5, policy.Time(2), 12); // median of 1.5, 1.4, 9.0
        foreach (double t in new[] { 1.3, 1.6, 1.2 })
        {
            policy.Observe(2, t);
        }

        Assert.Equal(1.4, policy.Time(2), 12); // the last 5: 1.4, 9.0, 1.3, 1.6, 1.2
    }

    [Fact]
    public void A_plain_step_comes_back_after_16_with_guesses()
    {
        var policy = Trained(n => 0.010 + (0.0002 * (n - 1)), 0.9);
        var choices = Enumerable.Range(0, 34).Select(_ => policy.Choose(8)).ToArray();
        Assert.Equal([16, 33], choices.Select((c, i) => (c, i)).Where(x => x.c == 0).Select(x => x.i));
    }
}
