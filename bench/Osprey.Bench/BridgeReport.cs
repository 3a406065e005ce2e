using System.Globalization;
using System.Text;
using BenchmarkDotNet.Environments;
using BenchmarkDotNet.Reports;
using Osprey.Python;

namespace Osprey.Bench;

/// <summary>bench/results/bridge.md: one small table from BenchmarkDotNet's summaries.</summary>
internal static class BridgeReport
{
    private static readonly CultureInfo s_invariant = CultureInfo.InvariantCulture;

    public static string Render(IReadOnlyList<Summary> summaries)
    {
        var rows = new List<Row>();
        foreach (Summary summary in summaries)
        {
            foreach (BenchmarkReport report in summary.Reports)
            {
                string app = report.BenchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "App")?.Value?.ToString() ?? "-";
                string what = report.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo.Trim('\'');
                double? mean = report.ResultStatistics?.Mean;
                double? stdDev = report.ResultStatistics?.StandardDeviation;
                double? min = report.ResultStatistics?.Min;
                double? max = report.ResultStatistics?.Max;
                long? allocated = report.GcStats.GetBytesAllocatedPerOperation(report.BenchmarkCase);
                rows.Add(new Row(app, what, mean, stdDev, min, max, allocated));
            }
        }

        HostEnvironmentInfo host = summaries.FirstOrDefault()?.HostEnvironmentInfo ?? HostEnvironmentInfo.GetCurrent();
        string python;
        try
        {
            python = PythonInstallation.Discover(PythonHost.Interpreter) is var p ? $"{p.Executable} {p.Version}" : "";
        }
        catch (Exception e) when (e is PythonStartupException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            python = PythonHost.Interpreter;
        }

        var text = new StringBuilder();
        text.AppendLine("# Python bridge, per request (BenchmarkDotNet)");
        text.AppendLine();
        text.Append(s_invariant, $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. **Absolute numbers are from a shared 2-core machine** ")
            .AppendLine("(other jobs were running); compare rows of one run, not runs of different days.");
        text.Append(s_invariant, $"CPU: {host.Cpu.Value?.ProcessorName ?? "?"}; .NET {Environment.Version}; ")
            .Append(s_invariant, $"BenchmarkDotNet {host.BenchmarkDotNetVersion}; Python {python}.").AppendLine();
        text.AppendLine("Times are **CPU time of the benchmark thread** per operation (`ThreadCpuClock`), not wall-clock time. " +
            "Job: ShortRun (1 launch, 3 warm-up and 3 measured iterations), Release, MemoryDiagnoser. " +
            "Command: `dotnet run -c Release --project bench/Osprey.Bench` (see bench/README.md).");
        text.AppendLine();
        text.AppendLine("| app | what | CPU ns/op | ± stddev | allocated B/op (managed) |");
        text.AppendLine("| --- | --- | ---: | ---: | ---: |");
        string[] order = ["osprey-bridge", "environ+python-call", "python-loop", "environ-build"];
        foreach (Row row in rows.OrderBy(r => r.App == "hello" ? 0 : r.App == "-" ? 2 : 1).ThenBy(r => Array.IndexOf(order, r.What)))
        {
            text.AppendLine(s_invariant, $"| {row.App} | {row.What} | {Format(row.Mean)} | {Format(row.StdDev)} | {row.Allocated?.ToString(s_invariant) ?? "?"} |");
        }
        foreach (string app in rows.Select(r => r.App).Where(a => a != "-").Distinct().OrderBy(a => a == "hello" ? 0 : 1))
        {
            Row? bridge = rows.Find(r => r.App == app && r.What == "osprey-bridge");
            Row? environThenCall = rows.Find(r => r.App == app && r.What == "environ+python-call");
            Row? alone = rows.Find(r => r.App == app && r.What == "python-loop");
            text.AppendLine(s_invariant, $"| {app} | **bridge cost** (osprey-bridge − python-loop) | **{Difference(bridge, alone)}** | | |");
            text.AppendLine(s_invariant, $"| {app} | of which native objects and response handling (osprey-bridge − environ+python-call) | {Difference(bridge, environThenCall)} | | |");
        }
        text.AppendLine();
        text.AppendLine("- `osprey-bridge`: one `GET /` through `WsgiWorker.Handle` with an in-memory `IHttpExchange`: environ built by " +
            "`EnvironBuilder`, the application called, `start_response` validated, the result iterated and its bytes copied out, " +
            "`close()` handled. The Python thread holds the GIL throughout; no sockets, no HTTP parsing.");
        text.AppendLine("- `environ+python-call`: the environ built by `EnvironBuilder`, then the application called from Python with a " +
            "Python `start_response` and its result iterated there: `osprey-bridge` minus this is what Osprey's native " +
            "`start_response`, `write` and `wsgi.input` objects and its response handling cost.");
        text.AppendLine("- `python-loop`: the same application called from a Python loop in the same interpreter, with a copy of the same " +
            "environ and a Python `start_response`: what the application costs on its own.");
        text.AppendLine("- `environ-build`: `EnvironBuilder.Build` alone (template copy and the request's keys), then freed.");
        text.AppendLine("- Allocated B/op counts the .NET heap only; CPython's own allocations are not in it.");
        return text.ToString();
    }

    /// <summary>
    /// A difference of two rows' means, with the range the iterations allow; "within noise" when the
    /// two rows' iteration ranges overlap (they run in separate processes, minutes apart, on a
    /// machine shared with others, and three iterations are too few for a useful confidence interval).
    /// </summary>
    private static string Difference(Row? minuend, Row? subtrahend)
    {
        if (minuend is not { Mean: double a, Min: double aMin, Max: double aMax } ||
            subtrahend is not { Mean: double b, Min: double bMin, Max: double bMax })
        {
            return "?";
        }
        string range = $"{Format(aMin - bMax)} to {Format(aMax - bMin)}";
        return aMin > bMax || aMax < bMin ? $"{Format(a - b)} ({range})" : $"within noise ({Format(a - b)}; {range})";
    }

    private static string Format(double? nanoseconds) => nanoseconds is double ns ? ns.ToString("N0", s_invariant) : "?";

    private sealed record Row(string App, string What, double? Mean, double? StdDev, double? Min, double? Max, long? Allocated);
}
