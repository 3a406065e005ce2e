using System.Globalization;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Workers;

/// <summary>
/// --daemon: the command returns once a worker serves; the master runs on in its own session with
/// its stdio (and its workers') on /dev/null; a start-up failure reaches the terminal with its exit code.
/// </summary>
public sealed class DaemonTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-daemon-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static List<string> Arguments(int port, params string[] args) =>
        OspreyServer.BuildArguments(new OspreyServerOptions { App = "timeout_app:app", Args = ["-D", .. args] }, port);

    /// <summary>Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session...</summary>
    private static string[] Stat(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    }

    private static string StandardStreams(int pid) =>
        string.Join(",", Enumerable.Range(0, 3).Select(fd => new FileInfo($"/proc/{pid}/fd/{fd}").LinkTarget));

    [Fact]
    public async Task Command_returns_once_serving_and_the_master_runs_detached()
    {
        int port = OspreyServer.GetFreePort();
        string pidFile = Path.Combine(_dir, "osprey.pid");
        int master = 0;
        try
        {
            // Returns only when the command has exited and every holder of its stdout and stderr
            // pipes (the detached master, its worker) has let go of them.
            ProcessResult result = await OspreyServer.RunToCompletionAsync(Arguments(port, "--pid", pidFile, "-w", "2"), TimeSpan.FromSeconds(60));
            Assert.True(result.ExitCode == 0, result.ToString());
            master = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);

            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            Assert.Equal("fast", await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}/")));

            string[] stat = Stat(master);
            Assert.Equal(master.ToString(CultureInfo.InvariantCulture), stat[3]); // its own session
            Assert.NotEqual(Environment.ProcessId.ToString(CultureInfo.InvariantCulture), stat[1]);
            Assert.Equal("/dev/null,/dev/null,/dev/null", StandardStreams(master));
            List<int> workers = await ProcessTools.WaitForChildrenAsync(master, 2, TimeSpan.FromSeconds(30));
            foreach (int worker in workers)
            {
                // The second worker may still be starting: it drops the master's stdio first thing.
                Assert.True(await Integration.TestSupport.EventuallyAsync(
                    () => Task.FromResult(StandardStreams(worker) == "/dev/null,/dev/null,/dev/null"), TimeSpan.FromSeconds(10)),
                    $"worker {worker}: {StandardStreams(worker)}");
            }

            ProcessTools.Signal(master, ProcessTools.SIGTERM);
            Assert.True(await Integration.TestSupport.EventuallyAsync(() => Task.FromResult(!ProcessTools.IsAlive(master)), TimeSpan.FromSeconds(30)));
            Assert.False(File.Exists(pidFile));
        }
        finally
        {
            if (master != 0 && ProcessTools.IsAlive(master))
            {
                ProcessTools.Signal(master, ProcessTools.SIGKILL);
            }
        }
    }

    [Fact]
    public async Task Port_in_use_is_reported_by_the_command_with_exit_1()
    {
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;

        ProcessResult result = await OspreyServer.RunToCompletionAsync(Arguments(port), TimeSpan.FromSeconds(60));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"Connection in use: 127.0.0.1:{port}", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Application_that_fails_to_import_is_reported_by_the_command_with_its_traceback()
    {
        var args = OspreyServer.BuildArguments(new OspreyServerOptions { App = "broken_import:app", Args = ["--daemon"] }, OspreyServer.GetFreePort());

        ProcessResult result = await OspreyServer.RunToCompletionAsync(args, TimeSpan.FromSeconds(60));

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("RuntimeError: broken_import marker", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("Failed to load application 'broken_import:app'", result.Stderr, StringComparison.Ordinal);
    }
}
