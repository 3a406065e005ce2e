namespace Osprey.Cli;

/// <summary>
/// gunicorn's <c>-k/--worker-class</c>, read as Osprey can honour it. Osprey has one kind of worker:
/// a process whose threads (<c>--threads</c>) call the WSGI application. That is what gunicorn's
/// sync and gthread workers are; the others either change how the application runs (gevent,
/// eventlet: the standard library patched for cooperative I/O) or serve another interface (ASGI).
/// </summary>
internal static class WorkerClasses
{
    /// <summary>Why Osprey cannot serve an application meant for this class, or null when it can.</summary>
    public static string? Refusal(string workerClass)
    {
        string name = workerClass.Trim();
        if (name.Length == 0)
        {
            return "value must not be empty";
        }
        // uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker, ...: every request would fail.
        if (name.Contains("uvicorn", StringComparison.OrdinalIgnoreCase) || name.Contains("asgi", StringComparison.OrdinalIgnoreCase))
        {
            return $"'{name}' serves ASGI applications; Osprey serves WSGI applications only";
        }
        return null;
    }

    /// <summary>What to say at start about this class: null for sync and gthread (what Osprey's workers are).</summary>
    public static string? Note(string? workerClass, int threads)
    {
        if (workerClass is null)
        {
            return null;
        }
        string name = workerClass.Trim().ToLowerInvariant();
        if (name is "sync" or "gthread" or "gunicorn.workers.sync.syncworker" or "gunicorn.workers.gthread.threadworker"
            or "egg:gunicorn#sync" or "egg:gunicorn#gthread")
        {
            return null;
        }
        string each = threads == 1 ? "one thread" : $"{threads} threads";
        return $"--worker-class {workerClass.Trim()} is not a worker Osprey has: each worker calls the application from {each} (--threads), as gunicorn's gthread does, and patches nothing";
    }
}
