using Spectre.Console;

namespace KvAdaQuant.Cli.Commands;

/// <summary>A Spectre.Console progress display on stderr (bar, percentage, remaining time, elapsed), or nothing when quiet.</summary>
internal static class CliProgress
{
    /// <summary>Runs <paramref name="body"/>, which adds named tasks and reports (done, total) to them.</summary>
    public static void Run(bool quiet, Action<Func<string, Action<double, double>>> body)
    {
        if (quiet || Console.IsErrorRedirected)
        {
            body(_ => (_, _) => { });
            return;
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new ElapsedTimeColumn())
            .Start(ctx => body(name =>
            {
                var task = ctx.AddTask(Markup.Escape(name), autoStart: true, maxValue: 1);
                return (done, total) =>
                {
                    task.MaxValue = Math.Max(total, 1e-9);
                    task.Value = done;
                };
            }));
    }
}
