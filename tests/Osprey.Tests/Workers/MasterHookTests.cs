using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// gunicorn's master hooks from the configuration file (on_starting, when_ready, pre_fork,
/// child_exit, nworkers_changed, on_reload, on_exit), run by a Python process of the master's.
/// </summary>
public sealed class MasterHookTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-master-hooks-");

    public void Dispose() => _dir.Dispose();

    /// <summary>The worker processes of <paramref name="master"/> (the hook process is a child too).</summary>
    private static List<int> Workers(int master) =>
        Children(master).Where(pid => ReadComm(pid).StartsWith("osprey-w", StringComparison.Ordinal)).ToList();

    private static string ReadComm(int pid) => ReadProc(pid, "comm").Trim();

    /// <summary>
    /// The master's hook process: a python child that is not a worker. A worker is a python process
    /// too until it names itself, and its command line is then the bootstrap that loads Osprey.
    /// </summary>
    private static bool IsHookProcess(int pid) =>
        ReadComm(pid).StartsWith("python", StringComparison.Ordinal) && !ReadProc(pid, "cmdline").Contains("_osprey_worker", StringComparison.Ordinal);

    private static string ReadProc(int pid, string file)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/{file}");
        }
        catch (IOException)
        {
            return "";
        }
    }

    private static async Task<List<int>> WaitForWorkersAsync(int master, int count)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (true)
        {
            var workers = Workers(master);
            if (workers.Count == count)
            {
                return workers;
            }
            Assert.True(DateTime.UtcNow < deadline, $"expected {count} workers, have {workers.Count}");
            await Task.Delay(50);
        }
    }

    private async Task<string[]> WaitForEventsAsync(string path, string last)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (true)
        {
            string[] lines = File.Exists(path) ? await File.ReadAllLinesAsync(path) : [];
            if (lines.Any(line => line.StartsWith(last, StringComparison.Ordinal)))
            {
                return lines;
            }
            Assert.True(DateTime.UtcNow < deadline, $"'{last}' never recorded; recorded:\n{string.Join("\n", lines)}");
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// Writes a gunicorn configuration file of <paramref name="settingsAndHooks"/> plus a
    /// <c>record(line)</c> function the hooks call; returns the file and the one they record to.
    /// </summary>
    private async Task<(string Config, string Events)> WriteHookConfigAsync(string settingsAndHooks)
    {
        var events = Path.Combine(_dir.Path, "events.txt");
        var config = Path.Combine(_dir.Path, "hooks.conf.py");
        string record = $$"""
            def record(line):
                with open({{System.Text.Json.JsonSerializer.Serialize(events)}}, "a") as f:
                    f.write(line + "\n")
            """;
        await File.WriteAllTextAsync(config, record + "\n\n" + settingsAndHooks);
        return (config, events);
    }

    /// <summary>gunicorn's reload sets the arbiter's worker count again, so nworkers_changed runs on every HUP, before on_reload.</summary>
    [Fact]
    public async Task A_reload_calls_nworkers_changed_even_when_the_count_stays_the_same()
    {
        var (config, events) = await WriteHookConfigAsync("""
            workers = 1

            def nworkers_changed(server, new_value, old_value):
                record("nworkers_changed %s -> %s" % (old_value, new_value))

            def on_reload(server):
                record("on_reload")
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "config_app:app", Args = ["-c", config] });
        var first = await WaitForWorkersAsync(server.ProcessId, 1);
        await server.WaitForLogAsync($"Booting worker with pid: {first[0]}", Eventually);

        Signal(server.ProcessId, SIGHUP);
        string[] recorded = await WaitForEventsAsync(events, "on_reload");

        Assert.Equal(["nworkers_changed None -> 1", "nworkers_changed 1 -> 1", "on_reload"], recorded);
    }

    [Fact]
    public async Task Each_master_hook_is_called_when_gunicorns_would_be()
    {
        var (config, events) = await WriteHookConfigAsync("""
            workers = 2
            proc_name = "hooked"

            def on_starting(server):
                record("on_starting master=%d proc_name=%s workers=%d" % (server.pid, server.proc_name, server.cfg.workers))

            def when_ready(server):
                record("when_ready")

            def pre_fork(server, worker):
                record("pre_fork age=%d" % worker.age)

            def child_exit(server, worker):
                record("child_exit pid=%d age=%d" % (worker.pid, worker.age))
                raise RuntimeError("child_exit failed on purpose")

            def nworkers_changed(server, new_value, old_value):
                record("nworkers_changed %s -> %s" % (old_value, new_value))

            def on_reload(server):
                record("on_reload")

            def on_exit(server):
                server.log.info("on_exit hook logged")
                record("on_exit")
            """);
        var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "config_app:app", Args = ["-c", config] });
        int master = server.ProcessId;
        try
        {
            var first = await WaitForWorkersAsync(master, 2);
            await WaitForEventsAsync(events, "pre_fork");
            // Killed while still booting, the first worker would be a failed start, which stops the master.
            foreach (int pid in first)
            {
                await server.WaitForLogAsync($"Booting worker with pid: {pid}", Eventually);
            }

            // A crashed worker: child_exit names it, and the raising hook is logged without harm.
            Signal(first[0], 9);
            await WaitForEventsAsync(events, $"child_exit pid={first[0]} age=1");
            await server.WaitForLogAsync("Exception in child_exit hook", Eventually);
            await WaitForWorkersAsync(master, 2);

            Signal(master, SIGTTIN);
            await WaitForEventsAsync(events, "nworkers_changed 2 -> 3");
            await WaitForWorkersAsync(master, 3);

            Signal(master, SIGHUP);
            await WaitForEventsAsync(events, "on_reload");
            await WaitForEventsAsync(events, "pre_fork age=2");

            // Ctrl-C in a terminal reaches the whole group; the hooks must still see the end.
            var hookProcess = Children(master).Single(IsHookProcess);
            Signal(hookProcess, 2);
            Signal(master, SIGTERM);
            await WaitForEventsAsync(events, "on_exit");
            await server.WaitForLogAsync("Shutting down: Master", Eventually);
            Assert.False(IsAlive(hookProcess));
        }
        finally
        {
            await server.DisposeAsync();
        }

        string[] recorded = await File.ReadAllLinesAsync(events);
        // As gunicorn's arbiter, which sets its worker count (old value None) before on_starting.
        Assert.Equal("nworkers_changed None -> 2", recorded[0]);
        Assert.Equal($"on_starting master={master} proc_name=hooked workers=2", recorded[1]);
        Assert.Equal("when_ready", recorded[2]);
        Assert.Equal(["pre_fork age=1", "pre_fork age=1"], recorded[3..5]);
        Assert.Equal("on_exit", recorded[^1]);
        Assert.Equal(1, recorded.Count(line => line == "on_reload"));
        // After the reload, the second generation's two workers were forked and the three old ones exited.
        Assert.Equal(2, recorded.Count(line => line == "pre_fork age=2"));
        Assert.Equal(3, recorded.Count(line => line.StartsWith("child_exit", StringComparison.Ordinal) && line.EndsWith("age=1", StringComparison.Ordinal)) - 1);
        Assert.Contains("nworkers_changed 3 -> 2", recorded);
        Assert.Contains($"[{master}] [INFO] on_exit hook logged", server.ErrorLog, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception in nworkers_changed hook", server.ErrorLog, StringComparison.Ordinal);
        Assert.DoesNotContain("hooks not run", server.ErrorLog, StringComparison.Ordinal);
    }
}
