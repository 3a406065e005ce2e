using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Integration;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// gunicorn's worker hooks from the configuration file (post_fork, post_worker_init, worker_exit)
/// run in each worker, with server and worker objects that have what hooks use.
/// </summary>
public sealed class WorkerHookTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-hooks-");

    public void Dispose() => _dir.Dispose();

    private const string Hooks = """
        import os
        workers = 2
        proc_name = "hooked"

        def post_fork(server, worker):
            # Before the application is imported: what it sets, the application sees.
            os.environ["OSPREY_CONFIG_TEST"] = "post_fork in %d, master %d, age %d, %d workers, %s" % (
                worker.pid, worker.ppid, worker.age, server.cfg.workers, server.proc_name)
            server.log.info("post_fork hook ran in %s", worker.pid)

        def post_worker_init(worker):
            worker.log.info("post_worker_init hook: booted=%s, app=%s", worker.booted, worker.wsgi.__name__)

        def worker_exit(server, worker):
            server.log.warning("worker_exit hook ran in %s", worker.pid)
        """;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Post_fork_post_worker_init_and_worker_exit_run_in_every_worker(bool asModule)
    {
        string config;
        if (asModule)
        {
            _dir.Write(Path.Combine("deploy", "__init__.py"), "");
            _dir.Write(Path.Combine("deploy", "hooked_settings.py"), Hooks);
            config = "python:deploy.hooked_settings";
        }
        else
        {
            config = _dir.Write("hooks.conf.py", Hooks);
        }
        var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "config_app:app", Args = ["-c", config], WorkingDirectory = _dir.Path,
        });
        int master = server.ProcessId;
        List<int> workers;
        try
        {
            workers = await WaitForChildrenAsync(master, 2, Eventually);
            var response = await RawHttp.GetAsync(server, "/");
            Assert.True(response.StatusCode == 200, response.ToString());
            JsonElement seen = response.Json();
            int pid = seen.GetProperty("pid").GetInt32();
            Assert.Equal($"post_fork in {pid}, master {master}, age 1, 2 workers, hooked", seen.GetProperty("raw_env").GetString());

            foreach (int worker in workers)
            {
                await server.WaitForLogAsync($"[{worker}] [INFO] post_fork hook ran in {worker}", Eventually);
                await server.WaitForLogAsync($"[{worker}] [INFO] post_worker_init hook: booted=True, app=app", Eventually);
            }
            Assert.DoesNotContain("hooks are not run", server.ErrorLog, StringComparison.Ordinal);
            Signal(master, SIGTERM);
            // The worker's last line, so that the process tree is not killed between the hook and that line.
            foreach (int worker in workers)
            {
                await server.WaitForLogAsync($"[{worker}] [INFO] Worker exiting (pid: {worker})", Eventually);
            }
        }
        finally
        {
            await server.DisposeAsync();
        }
        // The hook ran before the worker's last line, not instead of it.
        foreach (int worker in workers)
        {
            string log = server.ErrorLog;
            int hook = log.IndexOf($"[{worker}] [WARNING] worker_exit hook ran in {worker}", StringComparison.Ordinal);
            Assert.True(hook >= 0 && hook < log.IndexOf($"Worker exiting (pid: {worker})", StringComparison.Ordinal), log);
        }
    }

    [Fact]
    public async Task A_post_fork_hook_that_raises_stops_the_start_with_its_traceback()
    {
        var config = _dir.Write("raises.conf.py", """
            def post_fork(server, worker):
                1 / 0
            """);

        var result = await OspreyServer.RunToCompletionAsync(
            ["-c", config, "-b", $"127.0.0.1:{OspreyServer.GetFreePort()}", "--python", RepoPaths.SystemPython,
             "--chdir", RepoPaths.Apps, "config_app:app"],
            TimeSpan.FromSeconds(60));

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("ZeroDivisionError: division by zero", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("The configuration's post_fork hook raised ZeroDivisionError: division by zero", result.Stderr, StringComparison.Ordinal);
        TestSupport.AssertNoDotNetStackTrace(result.Stderr);
    }

    [Fact]
    public async Task A_worker_exit_hook_that_raises_is_logged_and_the_worker_still_exits_cleanly()
    {
        var config = _dir.Write("exit.conf.py", """
            def worker_exit(server, worker):
                raise RuntimeError("cleanup failed")
            """);
        var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "config_app:app", Args = ["-c", config] });
        try
        {
            var worker = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually))[0];
            Signal(server.ProcessId, SIGTERM);
            var log = await server.WaitForLogAsync($"Worker (pid:{worker}, slot 0, generation 1) exited with code 0", Eventually);

            Assert.Contains("Exception in worker_exit hook", log, StringComparison.Ordinal);
            Assert.Contains("RuntimeError: cleanup failed", log, StringComparison.Ordinal);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    private static readonly HttpClient s_client = new() { Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>One worker of workers_app with <paramref name="config"/> and --graceful-timeout 60, serving a 30 s request.</summary>
    private static async Task<(OspreyServer Server, int Worker, Task<(int? Pid, string? Error)> Slow)> StartWithSlowRequestAsync(string config)
    {
        var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["-c", config, "--graceful-timeout", "60"],
        });
        try
        {
            int worker = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually))[0];
            var slow = (await StartSlowRequestsAsync(server, s_client, 1, seconds: 30))[0];
            return (server, worker, slow);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task Worker_int_and_worker_exit_run_on_a_quick_stop_with_the_stacks_of_gunicorns_example()
    {
        // worker_int as gunicorn's example configuration writes it: the stack of every thread.
        var config = _dir.Write("int.conf.py", """
            import sys, threading, traceback

            def worker_int(worker):
                worker.log.info("worker_int hook in %s alive=%s", worker.pid, worker.alive)
                id2name = {th.ident: th.name for th in threading.enumerate()}
                code = []
                for thread_id, stack in sys._current_frames().items():
                    code.append("# Thread: %s(%d)" % (id2name.get(thread_id, ""), thread_id))
                    for filename, lineno, name, line in traceback.extract_stack(stack):
                        code.append('File: "%s", line %d, in %s' % (filename, lineno, name))
                worker.log.info("\n".join(code))

            def worker_exit(server, worker):
                server.log.info("worker_exit hook in %s", worker.pid)
            """);
        (OspreyServer server, int worker, Task<(int? Pid, string? Error)> slow) = await StartWithSlowRequestAsync(config);
        await using OspreyServer stopped = server;

        Signal(server.ProcessId, SIGINT);
        await WaitForExitAsync(server, TimeSpan.FromSeconds(20));

        Assert.Null((await slow).Pid);
        string log = server.ErrorLog;
        int hook = log.IndexOf($"[{worker}] [INFO] worker_int hook in {worker} alive=False", StringComparison.Ordinal);
        int exitHook = log.IndexOf($"[{worker}] [INFO] worker_exit hook in {worker}", StringComparison.Ordinal);
        int exiting = log.IndexOf($"[{worker}] [INFO] Worker exiting (pid: {worker}) on QUIT", StringComparison.Ordinal);
        Assert.True(hook >= 0 && hook < exitHook && exitHook < exiting, log);
        // The request in flight, in the application's frame.
        Assert.Matches(@"File: "".*workers_app\.py"", line \d+, in app", log);
        Assert.Equal(0, server.ExitCode);
    }

    [Fact]
    public async Task INT_makes_a_graceful_stop_quick_and_a_second_INT_kills_a_worker_int_hook_that_hangs()
    {
        var config = _dir.Write("hang.conf.py", """
            import time

            def worker_int(worker):
                worker.log.info("worker_int hook started in %s", worker.pid)
                time.sleep(120)
            """);
        (OspreyServer server, int worker, Task<(int? Pid, string? Error)> slow) = await StartWithSlowRequestAsync(config);
        await using OspreyServer stopped = server;

        // TERM: the worker drains, so the slow request holds it.
        Signal(server.ProcessId, SIGTERM);
        await Task.Delay(1000);
        Assert.False(server.HasExited);
        // INT: quick now; the hook runs, and the master gives it --graceful-timeout.
        Signal(server.ProcessId, SIGINT);
        await server.WaitForLogAsync($"worker_int hook started in {worker}", Eventually);
        await Task.Delay(1000);
        Assert.False(server.HasExited);
        // Ctrl-C twice: at once.
        var second = DateTime.UtcNow;
        Signal(server.ProcessId, SIGINT);
        await WaitForExitAsync(server, TimeSpan.FromSeconds(10));

        Assert.True(DateTime.UtcNow - second < TimeSpan.FromSeconds(10));
        Assert.False(IsAlive(worker));
        Assert.Null((await slow).Pid);
    }

    [Fact]
    public async Task Worker_abort_runs_when_a_request_times_out()
    {
        var config = _dir.Write("abort.conf.py", """
            def worker_abort(worker):
                worker.log.warning("worker_abort hook in %s alive=%s", worker.pid, worker.alive)
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "workers_app:app", Args = ["-c", config, "--timeout", "1", "--threads", "2"],
        });
        int worker = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually))[0];

        var first = RawHttp.GetAsync(server, "/slow?s=5");
        var second = RawHttp.GetAsync(server, "/slow?s=5");
        Assert.Equal(504, (await first).StatusCode);
        Assert.Equal(504, (await second).StatusCode);

        await server.WaitForLogAsync($"[{worker}] [WARNING] worker_abort hook in {worker} alive=False", Eventually);
        await server.WaitForLogAsync($"Worker exiting (pid: {worker})", Eventually);
        // Once per worker, as gunicorn's (whose worker exits after it), however many requests timed out.
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(server.ErrorLog, "worker_abort hook in"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Pre_request_and_post_request_see_each_request_and_its_response(string engine)
    {
        var config = _dir.Write("requests.conf.py", """
            def pre_request(worker, req):
                if req.path == "/refused":
                    raise RuntimeError("pre_request refused it")
                worker.log.info("pre_request %s %s query=%s version=%s host=%s peer=%s", req.method, req.path,
                                req.query, req.version, dict(req.headers)["HOST"], req.peer_addr[0])

            def post_request(worker, req, environ, resp):
                worker.log.info("post_request %s %s -> %s (%d) sent=%d PATH_INFO=%s type=%s", req.method, req.uri,
                                resp.status, resp.status_code, resp.sent, environ["PATH_INFO"], dict(resp.headers)["Content-Type"])
                if req.path == "/after":
                    raise ValueError("post_request failed on purpose")
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            Engine = engine, App = "config_app:app", Args = ["-c", config],
        });

        var ok = await RawHttp.GetAsync(server, "/seen?a=1");
        Assert.Equal(200, ok.StatusCode);
        await server.WaitForLogAsync($"post_request GET /seen?a=1 -> 200 OK (200) sent={ok.Body.Length} PATH_INFO=/seen type=application/json", Eventually);
        Assert.Contains($"pre_request GET /seen query=a=1 version=(1, 1) host=127.0.0.1:{server.Port} peer=127.0.0.1", server.ErrorLog, StringComparison.Ordinal);

        // A pre_request that raises is the application's error: 500, and the traceback in the log.
        var refused = await RawHttp.GetAsync(server, "/refused");
        Assert.Equal(500, refused.StatusCode);
        var log = await server.WaitForLogAsync("RuntimeError: pre_request refused it", Eventually);
        Assert.Contains("Error handling request", log, StringComparison.Ordinal);

        // A post_request that raises is logged; the response was already complete.
        var after = await RawHttp.GetAsync(server, "/after");
        Assert.Equal(200, after.StatusCode);
        await server.WaitForLogAsync("ValueError: post_request failed on purpose", Eventually);
        Assert.Contains("Exception in post_request hook", server.ErrorLog, StringComparison.Ordinal);
        Assert.Equal(200, (await RawHttp.GetAsync(server, "/still")).StatusCode);
    }
}
