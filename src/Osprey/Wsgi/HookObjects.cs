using Osprey.Logging;

namespace Osprey.Wsgi;

/// <summary>
/// The <c>server</c> and <c>worker</c> objects that gunicorn's configuration hooks are called with, as
/// far as hooks use them, in Python: shared by the workers' hooks (run by the loader) and the
/// master's (run by its hook process).
/// </summary>
internal static class HookObjects
{
    public const string Python = """
import os, sys

# The methods of gunicorn's logger that hooks call; lines go to the error log in its format.
class _HookLog:
    def __init__(self, level, pid=None):
        self.level, self.pid = level, pid
    def _write(self, label, number, msg, args, exc_info=False):
        if number < self.level:
            return
        import time, traceback
        text = str(msg) % args if args else str(msg)
        line = "%s [%d] [%s] %s\n" % (time.strftime("[%Y-%m-%d %H:%M:%S %z]"), self.pid or os.getpid(), label, text)
        if exc_info:
            line += traceback.format_exc()
        sys.stderr.write(line)
    def debug(self, msg, *args, **kwargs): self._write("DEBUG", 10, msg, args)
    def info(self, msg, *args, **kwargs): self._write("INFO", 20, msg, args)
    def warning(self, msg, *args, **kwargs): self._write("WARNING", 30, msg, args)
    warn = warning
    def error(self, msg, *args, **kwargs): self._write("ERROR", 40, msg, args)
    def critical(self, msg, *args, **kwargs): self._write("CRITICAL", 50, msg, args)
    def exception(self, msg, *args, **kwargs): self._write("ERROR", 40, msg, args, exc_info=True)
    def log(self, lvl, msg, *args, **kwargs):
        names = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
        self._write(names.get(lvl, "INFO"), lvl, msg, args)

# What gunicorn's hooks use of its arbiter.
class _HookServer:
    def __init__(self, pid, log, cfg, num_workers, proc_name):
        self.pid, self.log, self.cfg, self.num_workers, self.proc_name = pid, log, cfg, num_workers, proc_name

# What gunicorn's hooks use of its worker.
class _HookWorker:
    def __init__(self, ppid, age, log, cfg):
        self.pid, self.ppid, self.age, self.log, self.cfg = os.getpid(), ppid, age, log, cfg
        self.alive, self.booted, self.aborted, self.app, self.wsgi = True, False, False, None, None

# Runs the configuration's text (base64) as gunicorn runs the file; returns its names and its settings as cfg.
def _read_hooks(path, source_base64):
    import base64
    namespace = {"__file__": path, "__name__": "__config__"}
    exec(compile(base64.b64decode(source_base64), path, "exec"), namespace)
    return namespace, _hook_settings(namespace)

def _hook_settings(namespace):
    import types
    return types.SimpleNamespace(**{k.lower(): v for k, v in namespace.items()
                                    if not k.startswith("_") and not callable(v) and not isinstance(v, types.ModuleType)})


""";

    /// <summary>Python's logging level for a severity, which the hooks' <c>log</c> filters by.</summary>
    public static int LevelNumber(Severity level) => level switch
    {
        Severity.Debug => 10,
        Severity.Info => 20,
        Severity.Warning => 30,
        Severity.Error => 40,
        _ => 50,
    };
}
