using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Osprey.Cli;
using Osprey.Logging;
using Osprey.Wsgi;

namespace Osprey.Supervision;

/// <summary>
/// The configuration's master hooks (on_starting, when_ready, pre_fork, child_exit, nworkers_changed,
/// on_reload, on_exit). The master embeds no Python, so a Python process of its own runs the file's
/// text once and then calls each hook the master names on its stdin, in order, with a
/// <c>server</c> object like gunicorn's (and a <c>worker</c> with the pid and age for pre_fork and
/// child_exit). The master never waits for it, except up to a few seconds for on_exit, so a hook
/// that hangs cannot wedge supervision. What the process writes goes to the error log. It lives as
/// long as the master, so a when_ready that starts a metrics exporter keeps it running.
/// </summary>
internal sealed class MasterHooks
{
    private const string Runner = """
import json

def _main(path, source_base64, level, master_pid, proc_name, num_workers):
    # Signals for the master's process group (Ctrl-C, kill -HUP 0, ...) are the master's business:
    # this process ends when the master closes its stdin.
    import signal
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    # print() in the file or a hook goes to the error log, as the master's own lines do.
    sys.stdout = sys.stderr
    namespace, cfg = _read_hooks(path, source_base64)
    log = _HookLog(level, master_pid)
    server = _HookServer(master_pid, log, cfg, num_workers, proc_name)
    for line in sys.stdin:
        message = json.loads(line)
        name = message["hook"]
        server.num_workers = message["workers"]
        hook = namespace.get(name)
        if not callable(hook):
            continue
        if name in ("pre_fork", "child_exit"):
            worker = _HookWorker(master_pid, message["age"], log, cfg)
            worker.pid = message.get("pid")
            arguments = (server, worker)
        elif name == "nworkers_changed":
            arguments = (server, message["new"], message["old"])
        else:
            arguments = (server,)
        try:
            hook(*arguments)
        except Exception:
            log.exception("Exception in %s hook", name)
    # The master is gone or done: no thread a hook started (an exporter's server, say) outlives it.
    sys.stderr.flush()
    os._exit(0)

_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
""";

    private readonly Process _process;
    private readonly Thread _relay;
    private readonly Lock _lock = new();
    private bool _broken;

    private MasterHooks(Process process)
    {
        _process = process;
        _relay = new Thread(RelayErrors) { IsBackground = true, Name = "osprey-hooks-log" };
    }

    /// <summary>Starts the hook process; null (with one error line logged) if the interpreter cannot be run.</summary>
    public static MasterHooks? Start(HookSource source, string interpreter, Severity level, string procName, int workers)
    {
        var start = new ProcessStartInfo(interpreter)
        {
            RedirectStandardInput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(HookObjects.Python + Runner);
        start.ArgumentList.Add(source.Path);
        start.ArgumentList.Add(source.SourceBase64);
        start.ArgumentList.Add(HookObjects.LevelNumber(level).ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(procName);
        start.ArgumentList.Add(workers.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new Win32Exception();
        }
        catch (Win32Exception e)
        {
            Log.Error($"cannot run Python interpreter '{interpreter}' for the configuration's master hooks: {e.Message}");
            return null;
        }
        var hooks = new MasterHooks(process);
        hooks._relay.Start();
        return hooks;
    }

    private void RelayErrors()
    {
        try
        {
            while (_process.StandardError.ReadLine() is string line)
            {
                Log.Raw(Encoding.UTF8.GetBytes(line + "\n"));
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
    }

    /// <summary>Asks for a hook to be called; returns at once. A null <paramref name="oldWorkers"/> is Python's None (the first count).</summary>
    public void Call(string hook, int workers, int? pid = null, int age = 0, int newWorkers = 0, int? oldWorkers = 0)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("hook", hook);
            json.WriteNumber("workers", workers);
            json.WriteNumber("age", age);
            if (pid is int value)
            {
                json.WriteNumber("pid", value);
            }
            json.WriteNumber("new", newWorkers);
            if (oldWorkers is int old)
            {
                json.WriteNumber("old", old);
            }
            else
            {
                json.WriteNull("old");
            }
            json.WriteEndObject();
        }
        string line = Encoding.UTF8.GetString(buffer.ToArray());
        lock (_lock)
        {
            if (_broken)
            {
                return;
            }
            try
            {
                _process.StandardInput.WriteLine(line);
                _process.StandardInput.Flush();
            }
            catch (IOException)
            {
                _broken = true;
                Log.Error("the configuration's master hooks process has exited; its hooks are no longer called");
            }
        }
    }

    /// <summary>Calls on_exit if asked, lets the process finish what it was asked within <paramref name="wait"/>, then ends it.</summary>
    public void Stop(bool callOnExit, int workers, TimeSpan wait)
    {
        if (callOnExit)
        {
            Call("on_exit", workers);
        }
        lock (_lock)
        {
            try
            {
                _process.StandardInput.Close();
            }
            catch (IOException)
            {
            }
            _broken = true;
        }
        if (!_process.WaitForExit(wait))
        {
            Log.Warning($"the configuration's hooks did not finish within {wait.TotalSeconds:0} s; stopping them");
            try
            {
                _process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
        }
        // Its last lines (on_exit's, say) are still on their way through the pipe.
        _relay.Join(TimeSpan.FromSeconds(2));
        _process.Dispose();
    }
}
