using System.Globalization;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// Start-up as a supervisor or an operator sees it: gunicorn's exit codes for an application that does not
/// load, a --daemon's error said even with an error log file, a pid file that a running master holds, values
/// too large for timers, and the interpreter found on PATH only.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class StartupGuardTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-startup-");

    public void Dispose() => _dir.Dispose();

    private static Task<ProcessResult> RunAsync(string app, params string[] args) =>
        OspreyServer.RunToCompletionAsync(
            OspreyServer.BuildArguments(new OspreyServerOptions { App = app, Args = args }, OspreyServer.GetFreePort()), TimeSpan.FromSeconds(60));

    // ---- exit codes (gunicorn: 3 worker boot error, 4 application load error) -----------------------

    [Theory]
    [InlineData("no_such_module_xyz:app", 3)]   // gunicorn: ImportError in the worker, "Worker failed to boot"
    [InlineData("broken_import:app", 3)]        // the module raises at import
    [InlineData("no_app:app", 4)]               // gunicorn: AppImportError "Failed to find attribute", "App failed to load"
    [InlineData("not_callable:app", 4)]
    public async Task An_application_that_does_not_load_exits_with_gunicorns_code(string app, int code)
    {
        ProcessResult result = await RunAsync(app);

        Assert.True(result.ExitCode == code, result.ToString());
    }

    [Fact]
    public async Task An_application_attribute_that_is_none_exits_4()
    {
        _dir.Write("none_app.py", "app = None\n");

        ProcessResult result = await OspreyServer.RunToCompletionAsync(
            OspreyServer.BuildArguments(new OspreyServerOptions { App = "none_app:app", Chdir = _dir.Path }, OspreyServer.GetFreePort()),
            TimeSpan.FromSeconds(60));

        Assert.True(result.ExitCode == 4, result.ToString());
        Assert.Contains("Failed to find application object: 'none_app:app' is None.", result.Stderr, StringComparison.Ordinal);
    }

    // ---- --daemon with an error log file ---------------------------------------------------------------

    [Fact]
    public async Task A_daemon_that_cannot_load_the_application_says_so_even_with_an_error_log_file()
    {
        string log = Path.Combine(_dir.Path, "error.log");

        ProcessResult result = await RunAsync("broken_import:app", "-D", "--error-logfile", log);

        Assert.True(result.ExitCode == 3, result.ToString());
        Assert.Contains("[ERROR] Failed to load application 'broken_import:app'", result.Stderr, StringComparison.Ordinal);
        Assert.Contains($"its error log, with any traceback, is {log}", result.Stderr, StringComparison.Ordinal);
        string written = File.ReadAllText(log);
        Assert.Contains("RuntimeError: broken_import marker", written, StringComparison.Ordinal);
        Assert.Contains("Failed to load application 'broken_import:app'", written, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_daemon_whose_port_is_taken_says_so_even_with_an_error_log_file()
    {
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
        string log = Path.Combine(_dir.Path, "error.log");

        ProcessResult result = await OspreyServer.RunToCompletionAsync(
            OspreyServer.BuildArguments(new OspreyServerOptions { App = "workers_app:app", Args = ["-D", "--error-logfile", log] }, port),
            TimeSpan.FromSeconds(60));

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains($"Connection in use: 127.0.0.1:{port}", result.Stderr, StringComparison.Ordinal);
        // Errors only: the INFO lines stay in the log.
        Assert.DoesNotContain("[INFO]", result.Stderr, StringComparison.Ordinal);
    }

    // ---- --pid ---------------------------------------------------------------------------------------------

    [Fact]
    public async Task A_second_master_refuses_the_pid_file_of_one_that_runs()
    {
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        await using var first = await StartAsync("osprey", "--pid", pidFile);
        Assert.Equal(first.ProcessId.ToString(CultureInfo.InvariantCulture), File.ReadAllText(pidFile).Trim());

        // Another port: the pid file, not the bind, must stop it.
        ProcessResult second = await RunAsync("workers_app:app", "--pid", pidFile);

        Assert.True(second.ExitCode == 1, second.ToString());
        Assert.Contains($"Already running on PID {first.ProcessId} (pid file {pidFile})", second.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Listening at", second.Stderr, StringComparison.Ordinal);
        Assert.Equal(first.ProcessId.ToString(CultureInfo.InvariantCulture), File.ReadAllText(pidFile).Trim());
        Assert.True(IsAlive(first.ProcessId));
    }

    [Theory]
    [InlineData("dead")]
    [InlineData("not-osprey")]
    [InlineData("garbage")]
    public async Task A_stale_pid_file_is_replaced(string kind)
    {
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        string content = kind switch
        {
            // A pid that no process has: past the kernel's pid_max.
            "dead" => (int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture) + 1).ToString(CultureInfo.InvariantCulture),
            // A live process that is not an osprey master: the pid was reused.
            "not-osprey" => Environment.ProcessId.ToString(CultureInfo.InvariantCulture),
            _ => "not a pid",
        };
        File.WriteAllText(pidFile, content + "\n");

        await using var server = await StartAsync("osprey", "--pid", pidFile);

        Assert.Equal(server.ProcessId.ToString(CultureInfo.InvariantCulture), File.ReadAllText(pidFile).Trim());
    }

    // ---- values too large for timers -------------------------------------------------------------------

    [Fact]
    public async Task The_largest_jitter_starts_workers()
    {
        await using var server = await StartAsync("osprey", "--max-requests", "1000", "--max-requests-jitter", int.MaxValue.ToString(CultureInfo.InvariantCulture));
        using HttpClient client = NewClient();

        Assert.NotNull(await GetPidAsync(client, server.Port));
        Assert.DoesNotContain("internal error", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_huge_graceful_timeout_still_stops_cleanly()
    {
        await using var server = await StartAsync("osprey", "--graceful-timeout", "2600000");
        await WaitForChildrenAsync(server.ProcessId, 1, Eventually);
        using HttpClient client = NewClient();
        Assert.NotNull(await GetPidAsync(client, server.Port));

        Signal(server.ProcessId, SIGTERM);
        await WaitForExitAsync(server, Eventually);

        Assert.True(server.ExitCode == 0, server.ErrorLog);
        Assert.DoesNotContain("internal error", server.ErrorLog, StringComparison.Ordinal);
        Assert.DoesNotContain("exited with code 70", server.ErrorLog, StringComparison.Ordinal);
    }

    // ---- python3 from PATH, not from the working directory ----------------------------------------------

    [Fact]
    public async Task Without_python_the_server_does_not_run_python3_from_its_working_directory()
    {
        string marker = Path.Combine(_dir.Path, "fake-python3-ran");
        string fake = _dir.Write("python3", $"#!/bin/sh\necho ran > '{marker}'\nexit 1\n");
        File.SetUnixFileMode(fake, (UnixFileMode)0x1ED);

        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app",
            Engine = "osprey",
            Python = null,
            WorkingDirectory = _dir.Path,
            Environment = new Dictionary<string, string?> { ["PATH"] = "/usr/bin:/bin" },
        });
        using HttpClient client = NewClient();

        Assert.NotNull(await GetPidAsync(client, server.Port));
        Assert.False(File.Exists(marker), "./python3 was run:\n" + server.ErrorLog);
        Assert.Contains("Using Python", server.ErrorLog, StringComparison.Ordinal);
    }
}
