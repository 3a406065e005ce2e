using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Osprey.Bench;

// Arguments go to BenchmarkDotNet (--filter '*Environ*', --job ...). A run with arguments writes
// its table under bench/results/raw/ so that a partial run never replaces the committed one.
string rawDirectory = Path.Combine(PythonHost.BenchDirectory, "results", "raw");
IConfig config = DefaultConfig.Instance
    // ShortRun: the machine is shared, and a regression of the bridge is tens of percent, not one.
    // Thread CPU time rather than the wall clock: on a machine shared with other jobs the wall clock
    // measures the queue for the core as much as the code.
    .AddJob(Job.ShortRun.WithClock(new ThreadCpuClock()).WithId("ShortRun-cpu"))
    .AddDiagnoser(MemoryDiagnoser.Default)
    // The child project compiles Osprey again; on a loaded machine that exceeds the default 2 minutes.
    .WithBuildTimeout(TimeSpan.FromMinutes(15))
    .WithArtifactsPath(Path.Combine(rawDirectory, "bdn"));

Summary[] summaries = BenchmarkRunner.Run([typeof(BridgeBenchmarks), typeof(EnvironBenchmarks)], config, args);
string table = args.Length == 0
    ? Path.Combine(PythonHost.BenchDirectory, "results", "bridge.md")
    : Path.Combine(rawDirectory, "bridge-partial.md");
Directory.CreateDirectory(Path.GetDirectoryName(table)!);
File.WriteAllText(table, BridgeReport.Render(summaries));
Console.WriteLine($"bridge summary: {table}");
return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
