using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;
using Xunit.Abstractions;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// The process model with real processes: a master, its worker children, signals, crashes, hangs,
/// reloads and recycling, checked through HTTP answers (each names the worker pid that served it),
/// /proc and the error log. Timeouts are short so the class stays fast; "eventually" waits are generous.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class WorkerProcessTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Load_spreads_evenly_over_four_workers(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "4");
        var workers = await WaitForChildrenAsync(server.ProcessId, 4, Eventually);
        await WaitAllReadyAsync(server, 4);

        await using var load = new LoadLoop(server.Port, concurrency: 8, totalRequests: 800);
        await load.CompletionAsync();

        output.WriteLine($"{engine}: {load}");
        Assert.Equal(0, load.Failed);
        Assert.Equal(4, load.ByPid.Count);
        Assert.All(load.ByPid.Keys, pid => Assert.Contains(pid, workers));
        var maxShare = load.ByPid.Values.Max() / (double)load.Ok;
        output.WriteLine($"{engine}: busiest worker served {maxShare:P1} of {load.Ok} requests");
        Assert.True(maxShare <= 0.35, $"one worker served {maxShare:P1}: {load}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_worker_killed_under_load_costs_only_its_in_flight_requests_and_is_replaced(string engine)
    {
        const int concurrency = 4;
        await using var server = await StartAsync(engine, "-w", "2");
        var workers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);
        await using var load = new LoadLoop(server.Port, concurrency);
        await load.WaitForOkAsync(50, Eventually);

        var victim = workers[0];
        var killedAt = DateTime.UtcNow;
        Signal(victim, SIGKILL);
        var replacement = (await WaitForChildrenWithoutAsync(server.ProcessId, 2, Eventually, exclude: victim)).Single(p => p != workers[1]);
        // The replacement answers: it inherited its slot's listening socket, so connections queued there meanwhile wait for it.
        var servedAt = await FirstAnswerFromAsync(load, replacement, Eventually);
        await load.StopAsync();

        output.WriteLine($"{engine}: replacement {replacement} served {(servedAt - killedAt).TotalSeconds:0.00} s after the kill; {load}");
        Assert.True(load.Failed <= concurrency, $"more failures than requests in flight: {load}");
        // About 1 s on a quiet machine (a worker boots in under one); the bound is loose because the suite shares
        // two cores with other work, and the figure is printed above.
        Assert.True(servedAt - killedAt < TimeSpan.FromSeconds(15), $"the replacement first served {(servedAt - killedAt).TotalSeconds:0.00} s after the kill");
        Assert.Contains($"Worker (pid:{victim}", server.ErrorLog, StringComparison.Ordinal);
        Assert.Contains("was killed by signal 9", server.ErrorLog, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task An_app_that_fails_to_import_stops_the_master_with_the_traceback_once(string engine)
    {
        var result = await OspreyServer.RunToCompletionAsync(
            ["-b", $"127.0.0.1:{OspreyServer.GetFreePort()}", "--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps,
             "--engine", engine, "-w", "3", "broken_import:app"],
            TimeSpan.FromSeconds(60));

        Assert.Equal(3, result.ExitCode);
        Assert.Equal(1, Occurrences(result.Stderr, "Traceback (most recent call last):"));
        Assert.Contains("RuntimeError: broken_import marker", result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Booting worker", result.Stderr, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task HUP_under_continuous_load_fails_no_request(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2");
        var oldWorkers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);
        await using var load = new LoadLoop(server.Port, concurrency: 4);
        await load.WaitForOkAsync(50, Eventually);

        var mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGHUP);
        foreach (var old in oldWorkers)
        {
            await server.WaitForLogAsync($"Worker (pid:{old}, ", Eventually, mark);
        }
        var okAfterReload = load.Ok;
        await load.WaitForOkAsync(okAfterReload + 50, Eventually);
        await load.StopAsync();

        output.WriteLine($"{engine}: {load}");
        Assert.Equal(0, load.Failed);
        var newWorkers = Children(server.ProcessId);
        Assert.Equal(2, newWorkers.Count);
        Assert.Empty(newWorkers.Intersect(oldWorkers));
        Assert.All(newWorkers, pid => Assert.True(load.ByPid.ContainsKey(pid), $"new worker {pid} served nothing: {load}"));
    }

    [Fact]
    public async Task Control_signals_work_when_the_master_was_started_with_them_ignored()
    {
        // nohup ignores HUP, a non-interactive shell's background job INT and QUIT: gunicorn still
        // reloads and stops on them, and so must Osprey.
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["-w", "1"], IgnoredSignals = ["HUP", "INT", "QUIT"],
        });
        var oldWorkers = await WaitForChildrenAsync(server.ProcessId, 1, Eventually);
        var mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGHUP);
        await server.WaitForLogAsync($"Worker (pid:{oldWorkers.Single()}, ", Eventually, mark);
        Signal(server.ProcessId, 2 /* SIGINT */);
        await WaitForExitAsync(server, Eventually);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task HUP_with_an_app_that_no_longer_imports_keeps_the_old_workers(string engine)
    {
        var flag = Path.Combine(Path.GetTempPath(), $"osprey-break-{Guid.NewGuid():N}");
        try
        {
            await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
            {
                Engine = engine, App = "workers_app:app", Args = ["-w", "2"],
                Environment = new Dictionary<string, string?> { ["WORKERS_APP_BREAK"] = flag },
            });
            var oldWorkers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
            await WaitAllReadyAsync(server, 2);
            await using var load = new LoadLoop(server.Port, concurrency: 2);
            await load.WaitForOkAsync(20, Eventually);

            await File.WriteAllTextAsync(flag, "broken");
            var mark = server.ErrorLogPosition;
            Signal(server.ProcessId, SIGHUP);
            var log = await server.WaitForLogAsync("the old workers keep serving", Eventually, mark);
            var okAfter = load.Ok;
            await load.WaitForOkAsync(okAfter + 20, Eventually);
            await load.StopAsync();

            Assert.Contains("workers_app marker: the application no longer imports", log, StringComparison.Ordinal);
            Assert.Equal(0, load.Failed);
            Assert.Equal(oldWorkers.Order(), (await WaitForChildrenAsync(server.ProcessId, 2, Eventually)).Order());
            Assert.False(server.HasExited);
        }
        finally
        {
            File.Delete(flag);
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_recycle_whose_replacement_cannot_import_keeps_the_old_workers_serving(string engine)
    {
        // Recycling starts a replacement of the serving generation itself; when it fails, only it goes,
        // not the workers of that generation (the one it was to replace included).
        var flag = Path.Combine(Path.GetTempPath(), $"osprey-break-{Guid.NewGuid():N}");
        try
        {
            await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
            {
                Engine = engine, App = "workers_app:app", Args = ["-w", "2", "--max-requests", "10"],
                Environment = new Dictionary<string, string?> { ["WORKERS_APP_BREAK"] = flag },
            });
            var oldWorkers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
            await WaitAllReadyAsync(server, 2);
            await File.WriteAllTextAsync(flag, "broken");

            await using var load = new LoadLoop(server.Port, concurrency: 2);
            var log = await server.WaitForLogAsync("the old workers keep serving", Eventually);
            var okAfter = load.Ok;
            await load.WaitForOkAsync(okAfter + 40, Eventually);
            await load.StopAsync();

            Assert.Contains("workers_app marker: the application no longer imports", log, StringComparison.Ordinal);
            Assert.Equal(0, load.Failed);
            Assert.DoesNotContain("Stopping replaced worker", server.ErrorLog, StringComparison.Ordinal);
            Assert.Equal(oldWorkers.Order(), (await WaitForChildrenAsync(server.ProcessId, 2, Eventually)).Order());
        }
        finally
        {
            File.Delete(flag);
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Max_requests_recycling_fails_no_request_of_clients_that_keep_connections_and_never_retry(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2", "--max-requests", "300", "--max-requests-jitter", "30");
        await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);

        await using var load = new KeepAliveLoad(server.Port, concurrency: 8);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Occurrences(server.ErrorLog, "Stopping replaced worker") < 4)
        {
            Assert.True(DateTime.UtcNow < deadline, $"workers were not recycled: {load}\n{server.ErrorLog}");
            await Task.Delay(50);
        }
        await load.StopAsync();

        output.WriteLine($"{engine}: {load}");
        Assert.True(load.Failed == 0, $"{load}\n{server.ErrorLog}");
        // Each stopping worker had kept-alive connections, and they moved to the replacements.
        Assert.True(load.Connections > 8, $"no connection was ended by a recycled worker: {load}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task HUP_fails_no_request_of_clients_that_keep_connections_and_never_retry(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2");
        var oldWorkers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);
        await using var load = new KeepAliveLoad(server.Port, concurrency: 8);
        await load.WaitForOkAsync(200, Eventually);

        for (int reload = 0; reload < 2; reload++)
        {
            var mark = server.ErrorLogPosition;
            Signal(server.ProcessId, SIGHUP);
            foreach (var old in oldWorkers)
            {
                await server.WaitForLogAsync($"Worker (pid:{old}, ", Eventually, mark);
            }
            oldWorkers = Children(server.ProcessId);
        }
        await load.WaitForOkAsync(load.Ok + 200, Eventually);
        await load.StopAsync();

        output.WriteLine($"{engine}: {load}");
        Assert.True(load.Failed == 0, $"{load}\n{server.ErrorLog}");
        Assert.True(load.Connections > 8, $"no connection was ended by a reload: {load}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Max_requests_recycles_workers_under_load_without_failing_a_request(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2", "--max-requests", "60", "--max-requests-jitter", "10");
        await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);

        // Under continuous load until two workers have been recycled, i.e. replaced and then drained.
        await using var load = new LoadLoop(server.Port, concurrency: 4);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Occurrences(server.ErrorLog, "Stopping replaced worker") < 2 || load.ByPid.Count < 4)
        {
            Assert.True(DateTime.UtcNow < deadline, $"workers were not recycled: {load}\n{server.ErrorLog}");
            await Task.Delay(50);
        }
        await load.StopAsync();

        output.WriteLine($"{engine}: {load}");
        Assert.True(load.Failed == 0, $"{load}\n{server.ErrorLog}");
        Assert.Contains("(--max-requests)", server.ErrorLog, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_worker_over_max_worker_memory_is_recycled(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "1", "--max-worker-memory", "150");
        var first = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually)).Single();
        using var client = NewClient();
        // More than the limit by itself: a Native AOT worker starts some 30 MB smaller than a JIT one.
        Assert.Equal(first, await GetPidAsync(client, server.Port, "/grow?mb=160"));

        await server.WaitForLogAsync("exceeds --max-worker-memory 150", Eventually);
        await server.WaitForLogAsync($"Worker (pid:{first}, ", Eventually);
        var second = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually)).Single();
        Assert.NotEqual(first, second);
        Assert.Equal(second, await GetPidAsync(client, server.Port));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_worker_hung_in_C_code_holding_the_GIL_is_killed_and_replaced(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "1", "--timeout", "2");
        var hung = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually)).Single();
        await WaitAllReadyAsync(server, 1);
        using var client = NewClient(TimeSpan.FromSeconds(60));

        var hang = GetPidAsync(client, server.Port, "/hang-gil");
        // The worker's own watchdog answers 504 first (and asks to be recycled); the master kills it.
        await server.WaitForLogAsync($"WORKER TIMEOUT (pid:{hung}): no heartbeat", Eventually);
        Assert.Null(await hang);
        var replacement = (await WaitForChildrenWithoutAsync(server.ProcessId, 1, Eventually, exclude: hung)).Single();
        Assert.Equal(replacement, await GetPidAsync(client, server.Port));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task TERM_lets_in_flight_slow_requests_complete(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2", "--threads", "4", "--graceful-timeout", "20");
        await WaitAllReadyAsync(server, 2);
        using var client = NewClient();
        var slow = await StartSlowRequestsAsync(server, client, 4, seconds: 2);

        Signal(server.ProcessId, SIGTERM);
        var answers = await Task.WhenAll(slow);

        Assert.All(answers, a => Assert.True(a.Pid is not null, $"{a.Error}\n{server.ErrorLog}"));
        await WaitForExitAsync(server, Eventually);
        Assert.Contains("Shutting down: Master", server.ErrorLog, StringComparison.Ordinal);
    }

    /// <summary>
    /// As gunicorn's arbiter and its gthread workers, which close their listeners when they stop: a client that
    /// connects while the workers drain is refused at once, so that it (or a load balancer) tries another
    /// server, instead of waiting in a backlog that nobody accepts from until the drain ends, to be reset then.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_client_that_connects_during_a_graceful_stop_is_refused_at_once(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2", "--graceful-timeout", "30");
        await WaitAllReadyAsync(server, 2);
        using var client = NewClient();
        var slow = (await StartSlowRequestsAsync(server, client, 1, seconds: 10))[0];

        Signal(server.ProcessId, SIGTERM);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(6);
        while (true)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, server.Port);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                break;
            }
            Assert.True(DateTime.UtcNow < deadline, "connections were still taken 6 s into the drain:\n" + server.ErrorLog);
            await Task.Delay(100);
        }

        Assert.False(slow.IsCompleted);
        var answer = await slow;
        Assert.True(answer.Pid is not null, $"{answer.Error}\n{server.ErrorLog}");
        await WaitForExitAsync(server, Eventually);
    }

    /// <summary>
    /// A client that has connected but not yet sent its request when the worker is told to stop (a recycle, a
    /// reload, TERM) must still get its answer: it would not retry a request that meets a fresh connection's
    /// close. Idle connections that already served a request may close at once (their clients retry).
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_connection_made_just_before_TERM_still_gets_its_answer(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "1", "--graceful-timeout", "20");
        await WaitAllReadyAsync(server, 1);
        using var early = await RawHttpConnection.OpenAsync(server.Port);
        await Task.Delay(100);

        Signal(server.ProcessId, SIGTERM);
        await server.WaitForLogAsync("Handling signal: term", Eventually);
        // Long enough for the stopping worker to have closed its idle connections.
        await Task.Delay(700);
        await early.SendAsync(RawHttp.Get("/pid", server.Port));
        var response = await early.ReadResponseAsync();
        Assert.True(response.StatusCode == 200, response.ToString());
        await WaitForExitAsync(server, Eventually);
    }

    public static TheoryData<string, string> QuickStopSignals => Engines.Cross(["INT", "QUIT"]);

    [Theory, MemberData(nameof(QuickStopSignals))]
    public async Task INT_and_QUIT_stop_at_once_as_in_gunicorn(string engine, string signal)
    {
        // gunicorn's "quick shutdown": requests in flight are cut off, --graceful-timeout does not apply.
        await using var server = await StartAsync(engine, "-w", "2", "--graceful-timeout", "60");
        var workers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);
        using var client = NewClient();
        var slow = (await StartSlowRequestsAsync(server, client, 1, seconds: 30))[0];

        var sent = DateTime.UtcNow;
        Signal(server.ProcessId, signal == "INT" ? SIGINT : SIGQUIT);
        await WaitForExitAsync(server, TimeSpan.FromSeconds(15));

        Assert.True(DateTime.UtcNow - sent < TimeSpan.FromSeconds(15));
        Assert.Null((await slow).Pid);
        Assert.All(workers, pid => Assert.False(IsAlive(pid), $"worker {pid} outlived {signal}"));
        Assert.Equal(0, server.ExitCode);
        foreach (int worker in workers)
        {
            Assert.Contains($"Worker exiting (pid: {worker}) on QUIT", server.ErrorLog, StringComparison.Ordinal);
        }
        Assert.DoesNotContain("[ERROR]", server.ErrorLog, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task TTIN_adds_a_worker_and_TTOU_removes_one(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "1");
        await WaitForChildrenAsync(server.ProcessId, 1, Eventually);

        Signal(server.ProcessId, SIGTTIN);
        var two = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);
        using var client = NewClient();
        var seen = new HashSet<int>();
        for (var i = 0; i < 200 && seen.Count < 2; i++)
        {
            if (await GetPidAsync(client, server.Port) is int pid) seen.Add(pid);
        }
        Assert.Equal(two.Order(), seen.Order());

        // A new connection per request throughout: none may be lost. Connections are steered away from the
        // removed slot's socket before its worker stops accepting, so none is left queued on it when it closes.
        await using var load = new LoadLoop(server.Port, concurrency: 8);
        await load.WaitForOkAsync(100, Eventually);
        var mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGTTOU);
        var one = await WaitForChildrenAsync(server.ProcessId, 1, Eventually);
        await server.WaitForLogAsync(", slot 1, generation 1) exited", Eventually, mark);
        await load.WaitForOkAsync(load.Ok + 200, Eventually);
        await load.StopAsync();
        output.WriteLine($"{engine}: {load}");
        Assert.Equal(0, load.Failed);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(one.Single(), await GetPidAsync(client, server.Port));
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Workers_exit_when_the_master_is_killed(string engine)
    {
        await using var server = await StartAsync(engine, "-w", "2");
        var workers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        await WaitAllReadyAsync(server, 2);

        Signal(server.ProcessId, SIGKILL);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (workers.Any(IsAlive) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.All(workers, pid => Assert.False(IsAlive(pid), $"worker {pid} is an orphan"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Disposing_a_test_server_leaves_no_worker_behind(string engine)
    {
        var server = await StartAsync(engine, "-w", "2");
        var workers = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);

        await server.DisposeAsync();

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (workers.Any(IsAlive) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.All(workers, pid => Assert.False(IsAlive(pid), $"worker {pid} outlived the test server"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Pid_file_holds_the_master_pid_while_it_runs(string engine)
    {
        var pidFile = Path.Combine(Path.GetTempPath(), $"osprey-{Guid.NewGuid():N}.pid");
        await using var server = await StartAsync(engine, "--pid", pidFile);

        Assert.Equal(server.ProcessId.ToString(CultureInfo.InvariantCulture), (await File.ReadAllTextAsync(pidFile)).Trim());
        Signal(server.ProcessId, SIGTERM);
        await WaitForExitAsync(server, Eventually);
        Assert.False(File.Exists(pidFile), "the pid file outlived the master");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Unix_socket_is_shared_by_the_workers_and_honours_umask(string engine)
    {
        var path = Path.Combine(Path.GetTempPath(), $"osprey-{Guid.NewGuid():N}.sock");
        await using var server = await StartAsync(engine, "-w", "2", "-b", $"unix:{path}", "--umask", "0o007");
        await WaitAllReadyAsync(server, 2);

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute, File.GetUnixFileMode(path));
        var pids = new HashSet<int>();
        for (var i = 0; i < 20; i++)
        {
            var response = await UnixGetAsync(path, "/pid");
            Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
            pids.Add(int.Parse(BodyOf(response), CultureInfo.InvariantCulture));
        }
        Assert.All(pids, pid => Assert.Contains(pid, Children(server.ProcessId)));

        Signal(server.ProcessId, SIGTERM);
        await WaitForExitAsync(server, Eventually);
        Assert.False(File.Exists(path), "the socket file outlived the master");
    }

    /// <summary>
    /// --max-connections counts a worker's connections over all its binds (the test server has a TCP bind beside
    /// this unix one), and a worker that is not full accepts on every bind: Kestrel's listener on one bind once
    /// held the worker's only share while it waited, and the other bind never accepted. A connection that a full
    /// worker cannot take waits in the shared socket's queue for a sibling, not for the full worker.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_connection_that_a_full_worker_cannot_take_is_served_by_another(string engine)
    {
        var path = Path.Combine(Path.GetTempPath(), $"osprey-{Guid.NewGuid():N}.sock");
        await using var server = await StartAsync(engine, "-w", "2", "-b", $"unix:{path}", "--max-connections", "1");
        await WaitAllReadyAsync(server, 2);
        await Task.Delay(300);

        // One worker takes this one and is full.
        var busy = UnixGetAsync(path, "/slow?s=8");
        await server.WaitForLogAsync("slow request started", Eventually);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string next = await UnixGetAsync(path, "/pid").WaitAsync(TimeSpan.FromSeconds(20));
        var waited = clock.Elapsed;
        string slow = await busy.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.StartsWith("HTTP/1.1 200", next, StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 200", slow, StringComparison.Ordinal);
        Assert.True(waited < TimeSpan.FromSeconds(4), $"the second connection waited {waited.TotalSeconds:F1} s for the full worker");
        Assert.NotEqual(BodyOf(slow), BodyOf(next));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Workers_sharing_log_files_do_not_overwrite_each_others_lines(string engine)
    {
        var errorLog = Path.Combine(Path.GetTempPath(), $"osprey-{Guid.NewGuid():N}.log");
        var accessLog = Path.Combine(Path.GetTempPath(), $"osprey-{Guid.NewGuid():N}.access.log");
        try
        {
            await using (var server = await StartAsync(engine, "-w", "4", "--error-logfile", errorLog, "--access-logfile", accessLog))
            {
                await WaitForChildrenAsync(server.ProcessId, 4, Eventually);
                // A worker takes connections once it is ready, and says so in the (shared) log.
                var deadline = DateTime.UtcNow + Eventually;
                while (File.ReadLines(errorLog).Count(l => l.Contains("Booting worker", StringComparison.Ordinal)) < 4)
                {
                    Assert.True(DateTime.UtcNow < deadline, "the four workers did not all report ready");
                    await Task.Delay(100);
                }
                await using var load = new LoadLoop(server.Port, concurrency: 8, totalRequests: 400);
                await load.CompletionAsync();
                Assert.Equal(400, load.Ok);
                Assert.True(load.ByPid.Count > 1, $"one worker served everything, so nothing was shared: {load}");
                Signal(server.ProcessId, SIGTERM);
                await WaitForExitAsync(server, Eventually);
            }

            // Each process writes at the end of the file (O_APPEND): every request has its whole line.
            var accessLines = (await File.ReadAllLinesAsync(accessLog)).Where(l => l.Length > 0).ToList();
            Assert.Equal(400, accessLines.Count(l => l.StartsWith("127.0.0.1 - - [", StringComparison.Ordinal) && l.Contains("\"GET /pid HTTP/1.1\" 200", StringComparison.Ordinal)));
            Assert.Equal(400, accessLines.Count);
            var errorLines = (await File.ReadAllLinesAsync(errorLog)).Where(l => l.Length > 0).ToList();
            Assert.All(errorLines, l => Assert.Matches(@"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ", l));
            Assert.Equal(4, errorLines.Count(l => l.Contains("Worker exiting", StringComparison.Ordinal)));
        }
        finally
        {
            File.Delete(errorLog);
            File.Delete(accessLog);
        }
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Every worker has loaded the application: "Booting worker" is logged once each is ready to serve.</summary>
    private static async Task WaitAllReadyAsync(OspreyServer server, int count)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (Occurrences(server.ErrorLog, "Booting worker with pid") < count)
        {
            Assert.True(DateTime.UtcNow < deadline, "workers did not boot:\n" + server.ErrorLog);
            await Task.Delay(50);
        }
    }

    private static async Task<List<int>> WaitForChildrenWithoutAsync(int parent, int count, TimeSpan timeout, int exclude)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var children = Children(parent);
            if (children.Count == count && !children.Contains(exclude))
            {
                return children;
            }
            Assert.True(DateTime.UtcNow < deadline, $"expected {count} children of {parent} without {exclude}: {string.Join(",", children)}");
            await Task.Delay(25);
        }
    }

    private static async Task<DateTime> FirstAnswerFromAsync(LoadLoop load, int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            foreach (var (at, p) in load.Answers)
            {
                if (p == pid) return at;
            }
            Assert.True(DateTime.UtcNow < deadline, $"worker {pid} never answered: {load}");
            await Task.Delay(25);
        }
    }
}
