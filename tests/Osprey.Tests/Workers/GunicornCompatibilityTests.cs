using System.Globalization;
using System.Text.RegularExpressions;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Workers;

/// <summary>
/// gunicorn options that change how the processes run: --reuse-port (and the port-in-use check it
/// lifts), --capture-output, -R/--enable-stdio-inheritance, --no-sendfile and --print-config.
/// </summary>
public sealed class GunicornCompatibilityTests : IDisposable
{
    private readonly TempDir _dir = TempDir.Create("osprey-gunicorn-compat-");

    public void Dispose() => _dir.Dispose();

    private static async Task<string> GetAsync(int port, string path)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        return await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}{path}"));
    }

    [Fact]
    public async Task A_second_server_on_a_port_is_refused_unless_it_asks_to_share_it_with_reuse_port()
    {
        await using var first = await OspreyServer.StartAsync(new OspreyServerOptions { App = "stdio_app:app" });
        List<string> again = OspreyServer.BuildArguments(new OspreyServerOptions { App = "stdio_app:app" }, first.Port);

        // Not refused, it would join the first one's SO_REUSEPORT group and share its port unseen.
        ProcessResult refused = await OspreyServer.RunToCompletionAsync(again, TimeSpan.FromSeconds(60));
        Assert.True(refused.ExitCode == 1, refused.ToString());
        Assert.Contains($"Connection in use: 127.0.0.1:{first.Port}", refused.Stderr, StringComparison.Ordinal);

        // With --reuse-port it starts, and serves on the same port once the first is gone.
        var sharing = OspreyServer.CreateStartInfo([.. again.SkipLast(1), "--reuse-port", "stdio_app:app"], null);
        using var second = System.Diagnostics.Process.Start(sharing)!;
        second.StandardInput.Close();
        var secondLog = second.StandardError.ReadToEndAsync();
        try
        {
            await ProcessTools.WaitForChildrenAsync(second.Id, 1, TimeSpan.FromSeconds(30));
            Assert.False(second.HasExited);
            first.Dispose();
            Assert.True(await EventuallyAsync(async () =>
            {
                try
                {
                    return (await GetAsync(first.Port, "/plainfile")).StartsWith("\"\"\"Writes past", StringComparison.Ordinal);
                }
                catch (HttpRequestException)
                {
                    return false;
                }
            }, TimeSpan.FromSeconds(30)));
        }
        finally
        {
            ProcessTools.Signal(second.Id, ProcessTools.SIGTERM);
            await second.WaitForExitAsync();
        }
        Assert.Contains("Booting worker", await secondLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Capture_output_sends_what_is_written_to_the_descriptors_and_by_child_processes_to_the_error_log()
    {
        string log = Path.Combine(_dir.Path, "error.log");
        await using (var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "stdio_app:app", Args = ["--capture-output", "--error-logfile", log],
        }))
        {
            Assert.Equal("written\n", await GetAsync(server.Port, "/descriptors"));
            Assert.True(await EventuallyAsync(() => Task.FromResult(File.ReadAllText(log).Contains("child on stderr", StringComparison.Ordinal)),
                TimeSpan.FromSeconds(10)), File.ReadAllText(log));
            string text = File.ReadAllText(log);
            foreach (string line in new[] { "written to fd 1", "written to fd 2", "child on stdout", "child on stderr", "Booting worker" })
            {
                Assert.Contains(line, text, StringComparison.Ordinal);
            }
            Assert.DoesNotContain("written to fd", server.Stdout + server.ErrorLog, StringComparison.Ordinal);

            // After logrotate's move and USR1, descriptors 1 and 2 follow the log to its new file.
            File.Move(log, log + ".1");
            ProcessTools.Signal(server.ProcessId, 10 /* SIGUSR1 */);
            Assert.True(await EventuallyAsync(async () =>
            {
                await GetAsync(server.Port, "/descriptors");
                await Task.Delay(100);
                return File.Exists(log) && File.ReadAllText(log).Contains("child on stderr", StringComparison.Ordinal);
            }, TimeSpan.FromSeconds(20)), File.Exists(log) ? File.ReadAllText(log) : "(no new log file)");
            Assert.Contains("Log files reopened", File.ReadAllText(log), StringComparison.Ordinal);
        }
        File.Delete(log);

        // Without it they stay on the master's stdout and stderr.
        await using (var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "stdio_app:app", Args = ["--error-logfile", log],
        }))
        {
            Assert.Equal("written\n", await GetAsync(server.Port, "/descriptors"));
            Assert.True(await EventuallyAsync(() => Task.FromResult(server.ErrorLog.Contains("child on stderr", StringComparison.Ordinal)),
                TimeSpan.FromSeconds(10)), server.ErrorLog);
            Assert.Contains("written to fd 1", server.Stdout, StringComparison.Ordinal);
            Assert.Contains("child on stdout", server.Stdout, StringComparison.Ordinal);
            Assert.Contains("written to fd 2", server.ErrorLog, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_daemon_with_enable_stdio_inheritance_keeps_the_commands_output()
    {
        int port = OspreyServer.GetFreePort();
        string output = Path.Combine(_dir.Path, "daemon.out");
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        List<string> args = OspreyServer.BuildArguments(new OspreyServerOptions { App = "stdio_app:app", Args = ["-D", "-R", "--pid", pidFile] }, port);
        int master = 0;
        try
        {
            ProcessResult result = await OspreyServer.RunToCompletionAsync(
                ["-c", $"exec \"$0\" \"$@\" > '{output}' 2>&1 < /dev/null", RepoPaths.OspreyExecutable, .. args], TimeSpan.FromSeconds(60),
                executable: "/bin/sh");
            Assert.True(result.ExitCode == 0, result.ToString());
            master = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);

            Assert.Equal($"/dev/null,{output},{output}", string.Join(",", Enumerable.Range(0, 3).Select(fd => new FileInfo($"/proc/{master}/fd/{fd}").LinkTarget)));
            Assert.Equal("written\n", await GetAsync(port, "/descriptors"));
            Assert.True(await EventuallyAsync(() => Task.FromResult(File.ReadAllText(output).Contains("child on stderr", StringComparison.Ordinal)),
                TimeSpan.FromSeconds(10)), File.ReadAllText(output));
            string text = File.ReadAllText(output);
            Assert.Contains("written to fd 1", text, StringComparison.Ordinal);
            // The log (stderr) goes on after the command returned: the worker's boot line came after "ready".
            Assert.Contains("Booting worker", text, StringComparison.Ordinal);
        }
        finally
        {
            if (master != 0)
            {
                ProcessTools.Signal(master, ProcessTools.SIGTERM);
                await EventuallyAsync(() => Task.FromResult(!ProcessTools.IsAlive(master)), TimeSpan.FromSeconds(30));
            }
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task No_sendfile_sends_a_file_wrapper_through_its_read_method(string engine)
    {
        byte[] source = File.ReadAllBytes(Path.Combine(RepoPaths.Apps, "stdio_app.py"));
        await using (var server = await OspreyServer.StartAsync(engine, "stdio_app:app"))
        {
            // A plain file is sent from its descriptor, which gives the response the file's Content-Length.
            var response = await RawHttp.GetAsync(server, "/plainfile");
            Assert.Equal(source, response.Body);
            Assert.Equal(BodyFraming.ContentLength, response.Framing);
            Assert.Equal(source.Length.ToString(CultureInfo.InvariantCulture), response.Header("Content-Length"));
            // An object whose fileno() and read() disagree is read through read() (PEP 3333), sendfile or not.
            Assert.Equal("read through the file object\n", await GetAsync(server.Port, "/file"));
        }
        await using (var server = await OspreyServer.StartAsync(engine, "stdio_app:app", "--no-sendfile"))
        {
            // Iterated like any response without a length: chunked.
            var response = await RawHttp.GetAsync(server, "/plainfile");
            Assert.Equal(source, response.Body);
            Assert.Equal(BodyFraming.Chunked, response.Framing);
            Assert.Equal("read through the file object\n", await GetAsync(server.Port, "/file"));
        }
    }

    [Fact]
    public async Task Print_config_prints_every_setting_then_checks_the_application()
    {
        List<string> args = OspreyServer.BuildArguments(new OspreyServerOptions
        {
            App = "stdio_app:app", Args = ["--print-config", "-w", "3", "-k", "gthread", "--threads", "4", "--no-sendfile", "-e", "A=it's"],
        }, 9);
        ProcessResult result = await OspreyServer.RunToCompletionAsync(args, TimeSpan.FromSeconds(60));

        Assert.True(result.ExitCode == 0, result.ToString());
        string[] lines = result.Stdout.TrimEnd('\n').Split('\n');
        Assert.All(lines, line => Assert.Matches(new Regex(@"^[a-z_]+ += .+$"), line));
        Assert.Equal(lines.OrderBy(l => l, StringComparer.Ordinal), lines);
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^workers +=\s3$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^threads +=\s4$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^worker_class +=\s'gthread'$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^sendfile +=\sFalse$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^bind +=\s\['127\.0\.0\.1:9'\]$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^raw_env +=\s\[""A=it's""\]$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^wsgi_app +=\s'stdio_app:app'$"));

        // As gunicorn: the application is loaded too, and one that fails is exit 1 after the settings.
        ProcessResult broken = await OspreyServer.RunToCompletionAsync(
            OspreyServer.BuildArguments(new OspreyServerOptions { App = "broken_import:app", Args = ["--print-config"] }, 9), TimeSpan.FromSeconds(60));
        Assert.True(broken.ExitCode == 1, broken.ToString());
        Assert.Contains("wsgi_app", broken.Stdout, StringComparison.Ordinal);
        Assert.Contains("osprey: error: ", broken.Stderr, StringComparison.Ordinal);
    }
}
