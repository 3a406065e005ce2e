using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// gunicorn's upgrade on the fly: USR2 starts a new master on the same listening sockets (PIDFILE.2 while
/// the old one lives), TERM to the old one leaves the new one serving and promoted to PIDFILE, and not a
/// request fails on the way. A new master that cannot start leaves the old one serving.
/// </summary>
public sealed class UpgradeTests : IDisposable
{
    private const int SIGUSR2 = 12;
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = TempDir.Create("osprey-upgrade-");

    public void Dispose() => _dir.Dispose();

    private static int? ReadPid(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task USR2_then_TERM_to_the_old_master_hands_the_sockets_over_without_failing_a_request(string engine)
    {
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        string unixSocket = Path.Combine(_dir.Path, "osprey.sock");
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Engine = engine, Args = ["-w", "2", "--pid", pidFile, "-b", $"unix:{unixSocket}"],
        });
        int oldMaster = server.ProcessId;
        int newMaster = 0;
        try
        {
            List<int> oldWorkers = await WaitForChildrenAsync(oldMaster, 2, Eventually);
            await using var load = new LoadLoop(server.Port, concurrency: 2);
            await load.WaitForOkAsync(50, Eventually);

            Signal(oldMaster, SIGUSR2);
            Assert.True(await EventuallyAsync(() => Task.FromResult(ReadPid(pidFile + ".2") is int), Eventually), server.ErrorLog);
            newMaster = ReadPid(pidFile + ".2")!.Value;
            Assert.NotEqual(oldMaster, newMaster);
            Assert.Equal(oldMaster, ReadPid(pidFile));
            List<int> newWorkers = await WaitForChildrenAsync(newMaster, 2, Eventually);
            // Both generations accept from the same sockets until the old one stops.
            Assert.True(await EventuallyAsync(() => Task.FromResult(newWorkers.All(load.ByPid.ContainsKey)), Eventually), load.ToString());

            Signal(oldMaster, SIGTERM);
            Assert.True(await EventuallyAsync(() => Task.FromResult(!IsAlive(oldMaster)), Eventually), server.ErrorLog);
            Assert.True(await EventuallyAsync(() => Task.FromResult(ReadPid(pidFile) == newMaster && !File.Exists(pidFile + ".2")), Eventually),
                server.ErrorLog);
            int served = load.Ok;
            await load.WaitForOkAsync(served + 100, Eventually);
            await load.StopAsync();

            Assert.True(load.Failed == 0, load.ToString() + "\n" + server.ErrorLog);
            Assert.All(oldWorkers, pid => Assert.False(IsAlive(pid)));
            Assert.Contains("Master has been promoted", server.ErrorLog, StringComparison.Ordinal);
            // The old master left the unix socket file to the new one, which answers on it.
            string response = await UnixGetAsync(unixSocket, "/pid");
            Assert.StartsWith("HTTP/1.1 200 ", response, StringComparison.Ordinal);
            Assert.Contains(int.Parse(BodyOf(response), CultureInfo.InvariantCulture), newWorkers);

            Signal(newMaster, SIGTERM);
            Assert.True(await EventuallyAsync(() => Task.FromResult(!IsAlive(newMaster)), Eventually));
            Assert.False(File.Exists(pidFile));
            Assert.False(File.Exists(unixSocket));
        }
        finally
        {
            if (newMaster != 0 && IsAlive(newMaster))
            {
                Signal(newMaster, SIGKILL);
            }
        }
    }

    [Fact]
    public async Task A_new_master_that_cannot_start_leaves_the_old_one_serving()
    {
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        string broken = Path.Combine(_dir.Path, "broken");
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["--pid", pidFile],
            Environment = new Dictionary<string, string?> { ["WORKERS_APP_BREAK"] = broken },
        });
        await using var load = new LoadLoop(server.Port, concurrency: 2);
        await load.WaitForOkAsync(50, Eventually);

        // A deploy that broke the application: the new master's worker cannot import it.
        File.WriteAllText(broken, "");
        int mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGUSR2);
        await server.WaitForLogAsync("this master goes on serving", Eventually, mark);
        int served = load.Ok;
        await load.WaitForOkAsync(served + 100, Eventually);
        await load.StopAsync();

        Assert.True(load.Failed == 0, load.ToString() + "\n" + server.ErrorLog);
        Assert.Contains("the application no longer imports", server.ErrorLogSince(mark), StringComparison.Ordinal);
        Assert.Equal(server.ProcessId, ReadPid(pidFile));
        Assert.False(File.Exists(pidFile + ".2"));
    }

    /// <summary>
    /// WINCH stops a --daemon master's workers gracefully and keeps the master, which HUP brings back to its
    /// workers (gunicorn's step between USR2 and TERM); without --daemon it is a terminal resized, and ignored.
    /// </summary>
    [Fact]
    public async Task WINCH_stops_a_daemons_workers_until_HUP_and_is_ignored_otherwise()
    {
        const int SIGWINCH = 28, SIGHUP = 1;
        await using (var foreground = await OspreyServer.StartAsync(new OspreyServerOptions { App = "workers_app:app", Args = ["-w", "2"] }))
        {
            List<int> workers = await WaitForChildrenAsync(foreground.ProcessId, 2, Eventually);
            Signal(foreground.ProcessId, SIGWINCH);
            await foreground.WaitForLogAsync("Handling signal: winch", Eventually);
            await Task.Delay(1500);
            Assert.Equal(workers.Order(), Children(foreground.ProcessId).Order());
        }

        int port = OspreyServer.GetFreePort();
        string pidFile = Path.Combine(_dir.Path, "daemon.pid");
        string log = Path.Combine(_dir.Path, "daemon.log");
        ProcessResult started = await OspreyServer.RunToCompletionAsync(OspreyServer.BuildArguments(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["-D", "-w", "2", "--pid", pidFile, "--error-logfile", log],
        }, port), Eventually);
        Assert.True(started.ExitCode == 0, started.ToString());
        int master = ReadPid(pidFile)!.Value;
        try
        {
            await WaitForChildrenAsync(master, 2, Eventually);
            Signal(master, SIGWINCH);
            await WaitForChildrenAsync(master, 0, Eventually);
            Assert.True(IsAlive(master));

            // As gunicorn's master, this one keeps the port while no worker runs: a request made now waits
            // in the backlog and is answered once HUP has started the workers again.
            using var waiting = await RawHttpConnection.OpenAsync(port);
            await waiting.SendAsync($"GET /pid HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
            await Task.Delay(500);
            Assert.Empty(Children(master));
            Signal(master, SIGHUP);
            RawHttpResponse answered = await waiting.ReadResponseAsync(timeout: Eventually);
            Assert.True(answered.StatusCode == 200, File.ReadAllText(log));
            Assert.Contains(int.Parse(answered.BodyText, CultureInfo.InvariantCulture), await WaitForChildrenAsync(master, 2, Eventually));
            using var client = NewClient();
            Assert.True(await EventuallyAsync(async () => (await TryGetPidAsync(client, port, "/pid")).Pid is int, Eventually), File.ReadAllText(log));
        }
        finally
        {
            Signal(master, SIGTERM);
            await EventuallyAsync(() => Task.FromResult(!IsAlive(master)), Eventually);
        }
    }

    /// <summary>A signal meant for the master that reaches a worker (kill -SIG -PGID, a terminal) neither stops nor kills it.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_worker_outlives_the_masters_control_signals(string engine)
    {
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "workers_app:app", Engine = engine });
        int worker = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually))[0];
        using var client = NewClient();
        Assert.Equal(worker, await GetPidAsync(client, server.Port));

        foreach (int signal in new[] { 1 /* HUP */, 21 /* TTIN */, 22 /* TTOU */, SIGUSR2, 28 /* WINCH */ })
        {
            Signal(worker, signal);
        }
        await Task.Delay(500);

        Assert.True(IsAlive(worker));
        Assert.Equal(worker, await GetPidAsync(client, server.Port));
    }

    /// <summary>
    /// Under systemd socket activation (the listening socket at fd 3, LISTEN_FDS=1, LISTEN_PID naming the
    /// master) the master serves that socket whatever --bind says, and USR2 hands the same socket on.
    /// </summary>
    [Fact]
    public async Task A_socket_activated_master_serves_the_socket_it_was_given_and_hands_it_over()
    {
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        int port = ((System.Net.IPEndPoint)listener.LocalEndPoint!).Port;
        listener.Close();
        // What systemd does before it starts the service: the socket at fd 3, and the variables naming it.
        const string Activate = """
            import os, socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
            os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
            os.environ["LISTEN_FDS"] = "1"; os.environ["LISTEN_PID"] = str(os.getpid())
            os.execv(sys.argv[2], sys.argv[2:])
            """;
        // The --bind given is not where it serves: the activated socket is.
        List<string> args = OspreyServer.BuildArguments(new OspreyServerOptions { App = "workers_app:app", Args = ["--pid", pidFile] }, OspreyServer.GetFreePort());
        var start = OspreyServer.CreateStartInfo(["-c", Activate, port.ToString(CultureInfo.InvariantCulture), RepoPaths.OspreyExecutable, .. args], null);
        start.FileName = RepoPaths.SystemPython;
        using var master = System.Diagnostics.Process.Start(start)!;
        master.StandardInput.Close();
        var output = master.StandardError.ReadToEndAsync();
        int newMaster = 0;
        try
        {
            using var client = NewClient();
            Assert.True(await EventuallyAsync(async () => (await TryGetPidAsync(client, port, "/pid")).Pid is int, Eventually), "not serving on the activated socket");
            await using var load = new LoadLoop(port, concurrency: 2);
            await load.WaitForOkAsync(50, Eventually);

            Signal(master.Id, SIGUSR2);
            Assert.True(await EventuallyAsync(() => Task.FromResult(ReadPid(pidFile + ".2") is int), Eventually));
            newMaster = ReadPid(pidFile + ".2")!.Value;
            await WaitForChildrenAsync(newMaster, 1, Eventually);
            await Task.Delay(1000);
            Signal(master.Id, SIGTERM);
            await master.WaitForExitAsync();
            Assert.True(await EventuallyAsync(() => Task.FromResult(ReadPid(pidFile) == newMaster), Eventually));
            int served = load.Ok;
            await load.WaitForOkAsync(served + 100, Eventually);
            await load.StopAsync();
            Assert.True(load.Failed == 0, load.ToString());
            Assert.Contains(load.ByPid.Keys, pid => Children(newMaster).Contains(pid));
        }
        finally
        {
            if (!master.HasExited) master.Kill(entireProcessTree: true);
            if (newMaster != 0 && IsAlive(newMaster)) Signal(newMaster, SIGKILL);
        }
        Assert.Contains($"Listening at: fd://3", await output, StringComparison.Ordinal);
    }

    /// <summary>
    /// systemd's Type=notify, as gunicorn speaks it: READY=1 once a worker serves, MAINPID from a master
    /// started by USR2 once it is promoted, STOPPING=1 on TERM; the workers do not see NOTIFY_SOCKET.
    /// </summary>
    [Fact]
    public async Task Systemd_is_told_when_the_server_is_ready_who_the_master_is_and_when_it_stops()
    {
        string path = Path.Combine(_dir.Path, "notify.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(path));
        var messages = new List<string>();
        async Task<string> NextAsync()
        {
            var buffer = new byte[4096];
            using var timeout = new CancellationTokenSource(Eventually);
            int n = await notify.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            string message = Encoding.UTF8.GetString(buffer, 0, n);
            messages.Add(message);
            return message;
        }

        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["--pid", pidFile], Environment = new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = path },
        });
        string ready = await NextAsync();
        Assert.Contains("READY=1", ready, StringComparison.Ordinal);
        Assert.Contains($"MAINPID={server.ProcessId}", ready, StringComparison.Ordinal);
        using var client = NewClient();
        int worker = (await GetPidAsync(client, server.Port))!.Value;
        Assert.DoesNotContain("NOTIFY_SOCKET=", File.ReadAllText($"/proc/{worker}/environ"), StringComparison.Ordinal);
        Assert.Contains("NOTIFY_SOCKET=", File.ReadAllText($"/proc/{server.ProcessId}/environ"), StringComparison.Ordinal);

        Signal(server.ProcessId, SIGUSR2);
        string newReady = await NextAsync();
        Assert.Contains("READY=1", newReady, StringComparison.Ordinal);
        Assert.DoesNotContain("MAINPID", newReady, StringComparison.Ordinal);
        int newMaster = ReadPid(pidFile + ".2")!.Value;
        try
        {
            Signal(server.ProcessId, SIGTERM);
            string promoted = await NextAsync();
            Assert.Contains($"MAINPID={newMaster}", promoted, StringComparison.Ordinal);
            Signal(newMaster, SIGTERM);
            Assert.Contains("STOPPING=1", await NextAsync(), StringComparison.Ordinal);
        }
        finally
        {
            if (IsAlive(newMaster)) Signal(newMaster, SIGKILL);
        }
    }

    /// <summary>The configuration's pre_exec(server) is called on USR2, as the new master starts.</summary>
    [Fact]
    public async Task USR2_calls_the_configurations_pre_exec_hook()
    {
        string marker = Path.Combine(_dir.Path, "pre_exec.txt");
        string pidFile = Path.Combine(_dir.Path, "osprey.pid");
        string config = _dir.Write("hooks.conf.py", $$"""
            def pre_exec(server):
                with open({{System.Text.Json.JsonSerializer.Serialize(marker)}}, "w") as f:
                    f.write(str(server.pid))
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["--config", config, "--pid", pidFile],
        });
        Assert.DoesNotContain("pre_exec", server.ErrorLog, StringComparison.Ordinal);
        int newMaster = 0;
        try
        {
            Signal(server.ProcessId, SIGUSR2);
            Assert.True(await EventuallyAsync(() => Task.FromResult(File.Exists(marker) && File.ReadAllText(marker).Length > 0), Eventually),
                server.ErrorLog);
            Assert.Equal(server.ProcessId.ToString(CultureInfo.InvariantCulture), File.ReadAllText(marker));
            Assert.True(await EventuallyAsync(() => Task.FromResult(ReadPid(pidFile + ".2") is int), Eventually));
            newMaster = ReadPid(pidFile + ".2")!.Value;
        }
        finally
        {
            if (newMaster != 0 && IsAlive(newMaster)) Signal(newMaster, SIGKILL);
        }
    }
}
