using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>What it takes to find and load the application, independent of the command line.</summary>
public sealed record ApplicationSpec(
    string Text,
    string Module,
    string Attribute,
    string? FactoryArguments,
    IReadOnlyList<string> PythonPath,
    string RootPath,
    IReadOnlyList<string> Argv,
    bool Multithread,
    bool Multiprocess)
{
    /// <summary>Peers whose X-Forwarded-* and Forwarded headers shape the environ (<c>--forwarded-allow-ips</c>).</summary>
    public TrustedProxies ForwardedAllowIps { get; init; } = TrustedProxies.Default;

    /// <summary>The access log's line (<c>--access-logformat</c>).</summary>
    public AccessLogFormat AccessLogFormat { get; init; } = AccessLogFormat.Default;

    /// <summary>The configuration file's worker hooks; null for none.</summary>
    public WorkerHookSpec? Hooks { get; init; }

    /// <summary>False (<c>--no-sendfile</c>): wsgi.file_wrapper responses are iterated like any other.</summary>
    public bool Sendfile { get; init; } = true;
}

/// <summary>
/// gunicorn's worker hooks from the configuration: <c>post_fork(server, worker)</c> before the
/// application is imported, <c>post_worker_init(worker)</c> after, <c>pre_request</c> and
/// <c>post_request</c> around each request, <c>worker_exit(server, worker)</c> when the worker
/// stops, <c>worker_int(worker)</c> before that on a quick stop (INT, QUIT), <c>worker_abort(worker)</c>
/// when a request times out. The file (or the <c>python:MODULE</c> module's file) is run again in the
/// worker, from the text the master read (<paramref name="SourceBase64"/>).
/// The <c>server</c> and <c>worker</c> objects carry what hooks use of gunicorn's: <c>pid</c>,
/// <c>ppid</c>, <c>age</c>, <c>log</c> (lines go to the error log), <c>cfg</c> (the file's settings),
/// <c>num_workers</c>, <c>proc_name</c>.
/// </summary>
public sealed record WorkerHookSpec(string Path, string SourceBase64, int MasterPid, int Age, Severity LogLevel, int Workers, string ProcName);

/// <summary>
/// The loaded application and everything shared by the Python threads that call it.
/// </summary>
public sealed class WsgiApplication
{
    // Start-up only: import logic is clearer in Python, and it runs once.
    // OspreyLoadError carries the one-line messages for the user's own mistakes (no traceback needed).
    private const string Loader = """
import sys, os, ast, importlib

class OspreyLoadError(Exception):
    pass

def _run_hook(name, hook, *args):
    try:
        hook(*args)
    except Exception as e:
        import traceback
        traceback.print_exc()
        raise OspreyLoadError("The configuration's %s hook raised %s: %s" % (name, type(e).__name__, e)) from None

# gunicorn's request as pre_request and post_request see it.
class _HookRequest:
    def __init__(self, method, uri, version, headers, scheme, peer_addr):
        self.method, self.uri, self.version, self.headers, self.scheme = method, uri, version, headers, scheme
        self.peer_addr = self.remote_addr = peer_addr
        rest, _, self.fragment = uri.partition("#")
        self.path, _, self.query = rest.partition("?")

# gunicorn's response as post_request sees it.
class _HookResponse:
    def __init__(self, status, headers, sent):
        self.status, self.headers, self.sent, self.response_length = status, headers, sent, sent
        self.status_code = int(status.split(None, 1)[0])

def _request_hooks(namespace, worker):
    pre, post = namespace.get("pre_request"), namespace.get("post_request")
    if not callable(pre) and not callable(post):
        return None, None
    def begin(method, uri, version, headers, scheme, peer_addr):
        request = _HookRequest(method, uri, version, headers, scheme, peer_addr)
        if callable(pre):
            pre(worker, request)
        return request
    def end(request, environ, status, headers, sent):
        try:
            post(worker, request, environ, _HookResponse(status, headers, sent))
        except Exception:
            worker.log.exception("Exception in post_request hook")
    return begin, end if callable(post) else None

def load(module_name, attribute, factory_args, extra_paths, argv, hooks):
    sys.argv = list(argv)
    # As gunicorn: the working directory (after --chdir) is importable, --pythonpath entries first.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for p in extra_paths:
        p = os.path.abspath(p)
        if p not in sys.path:
            sys.path.insert(0, p)
    worker_exit = worker_int = worker_abort = request_begin = request_end = None
    if hooks is not None:
        path, source_base64, ppid, age, level, num_workers, proc_name = hooks
        namespace, cfg = _read_hooks(path, source_base64)
        log = _HookLog(level)
        server = _HookServer(ppid, log, cfg, num_workers, proc_name)
        worker = _HookWorker(ppid, age, log, cfg)
        if callable(namespace.get("post_fork")):
            _run_hook("post_fork", namespace["post_fork"], server, worker)
        if callable(namespace.get("worker_exit")):
            worker_exit = lambda: namespace["worker_exit"](server, worker)
        # As gunicorn's worker: not alive any more by the time either is called.
        if callable(namespace.get("worker_int")):
            def worker_int():
                worker.alive = False
                namespace["worker_int"](worker)
        if callable(namespace.get("worker_abort")):
            def worker_abort():
                worker.alive = False
                namespace["worker_abort"](worker)
        request_begin, request_end = _request_hooks(namespace, worker)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + '.')):
            raise OspreyLoadError("No module named '%s' (looked in: %s)" % (e.name, ', '.join(p or '.' for p in sys.path[:3]) + ', ...')) from None
        raise
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise OspreyLoadError("Failed to find attribute '%s' in '%s'." % (attribute, module_name)) from None
    if factory_args is not None:
        call = ast.parse('f(%s)' % factory_args, mode='eval').body
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            raise OspreyLoadError("Failed to parse arguments as literal values: %r" % ('%s(%s)' % (attribute, factory_args))) from None
        if not callable(target):
            raise OspreyLoadError("'%s:%s' is not callable, so it cannot be used as an application factory." % (module_name, attribute))
        target = target(*args, **kwargs)
    if target is None:
        raise OspreyLoadError("Failed to find application object: '%s:%s' is None." % (module_name, attribute))
    if not callable(target):
        raise OspreyLoadError("Application object must be callable: '%s' is %s." % (
            module_name + ':' + attribute, type(target).__name__))
    if hooks is not None:
        worker.app = worker.wsgi = target
        worker.booted = True
        if callable(namespace.get("post_worker_init")):
            _run_hook("post_worker_init", namespace["post_worker_init"], worker)
    return target, worker_exit, request_begin, request_end, worker_int, worker_abort
""";

    private readonly PyRef _callable;
    // Each run at most once; the one that takes it (under the GIL) runs it.
    private PyRef _workerExit;
    private PyRef _workerInt;
    private PyRef _workerAbort;
    private readonly PyRef _requestBegin;
    private readonly PyRef _requestEnd;

    /// <summary>
    /// <c>begin(method, uri, version, headers, scheme, peer_addr)</c>: calls the configuration's
    /// pre_request (if any) and returns the request object for post_request; null without either hook.
    /// </summary>
    internal PyBorrowed RequestBegin => _requestBegin.Borrow();

    /// <summary><c>end(request, environ, status, headers, sent)</c>: calls post_request, logging what it raises; null without it.</summary>
    internal PyBorrowed RequestEnd => _requestEnd.Borrow();

    internal WsgiTypes Types { get; }
    internal EnvironBuilder Environ { get; }
    internal AccessLogFormat AccessLogFormat { get; }
    internal bool Sendfile { get; }
    internal PlainFiles PlainFiles { get; }
    internal PyBorrowed Callable => _callable.Borrow();

    private WsgiApplication(PyRef callable, PyRef workerExit, PyRef workerInt, PyRef workerAbort, PyRef requestBegin, PyRef requestEnd,
        WsgiTypes types, EnvironBuilder environ, AccessLogFormat accessLogFormat, bool sendfile, PlainFiles plainFiles)
    {
        _callable = callable;
        _workerExit = workerExit;
        _workerInt = workerInt;
        _workerAbort = workerAbort;
        _requestBegin = requestBegin;
        _requestEnd = requestEnd;
        Types = types;
        Environ = environ;
        AccessLogFormat = accessLogFormat;
        Sendfile = sendfile;
        PlainFiles = plainFiles;
    }

    /// <summary>
    /// Imports the application with the GIL taken for the duration. Throws
    /// <see cref="PythonStartupException"/> with the message (and traceback) to show the user.
    /// </summary>
    public static WsgiApplication Load(ApplicationSpec spec)
    {
        using Gil.Acquired gil = Gil.Acquire();
        var types = new WsgiTypes();
        using PyRef errors = types.Errors.Instantiate(new ErrorStreamObject(2, "<wsgi.errors>"));
        using (PyRef stdoutBuffer = types.Errors.Instantiate(new ErrorStreamObject(1, "<stdout>")))
        using (PyRef stderrBuffer = types.Errors.Instantiate(new ErrorStreamObject(2, "<stderr>")))
        using (PyRef stdout = TextStream(stdoutBuffer.Borrow()))
        using (PyRef stderr = TextStream(stderrBuffer.Borrow()))
        using (PyRef sys = Py.Import("sys"))
        {
            // print() and sys.stderr go to the error log, as wsgi.errors does.
            Py.SetAttr(sys.Borrow(), "stdout", stdout.Borrow());
            Py.SetAttr(sys.Borrow(), "stderr", stderr.Borrow());
        }

        PyRef callable;
        PyRef workerExit;
        PyRef workerInt;
        PyRef workerAbort;
        PyRef requestBegin;
        PyRef requestEnd;
        try
        {
            using PyRef ns = Py.Run(HookObjects.Python + Loader, "<osprey loader>");
            using PyRef load = Py.GetItem(ns.Borrow(), "load\0"u8).NewRef();
            using PyRef module = Py.Str(spec.Module);
            using PyRef attribute = Py.Str(spec.Attribute);
            using PyRef factory = spec.FactoryArguments is null ? Py.None.NewRef() : Py.Str(spec.FactoryArguments);
            using PyRef paths = Py.List();
            foreach (string path in spec.PythonPath)
            {
                using PyRef p = Py.Str(path);
                Py.Append(paths.Borrow(), p.Borrow());
            }
            using PyRef argv = Py.List();
            foreach (string arg in spec.Argv)
            {
                using PyRef a = Py.Str(arg);
                Py.Append(argv.Borrow(), a.Borrow());
            }
            using PyRef hooks = HookArguments(spec.Hooks);
            using PyRef args = Py.Tuple(module.Borrow(), attribute.Borrow(), factory.Borrow(), paths.Borrow(), argv.Borrow(), hooks.Borrow());
            using PyRef loaded = load.Borrow().Call(args.Borrow());
            callable = loaded.Borrow().TupleItem(0).NewRef();
            workerExit = OptionalItem(loaded.Borrow(), 1);
            requestBegin = OptionalItem(loaded.Borrow(), 2);
            requestEnd = OptionalItem(loaded.Borrow(), 3);
            workerInt = OptionalItem(loaded.Borrow(), 4);
            workerAbort = OptionalItem(loaded.Borrow(), 5);
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
            if (e.TypeName == "OspreyLoadError")
            {
                throw new PythonStartupException(e.PythonMessage);
            }
            throw new PythonStartupException($"Failed to load application '{spec.Text}': {e.Message}", e.Traceback);
        }
        var environ = new EnvironBuilder(spec.RootPath, errors.Borrow(), types.FileWrapper.Type, spec.Multithread, spec.Multiprocess,
            spec.ForwardedAllowIps);
        return new WsgiApplication(callable, workerExit, workerInt, workerAbort, requestBegin, requestEnd, types, environ,
            spec.AccessLogFormat, spec.Sendfile, new PlainFiles());
    }

    /// <summary>
    /// sys.stdout or sys.stderr: a real io.TextIOWrapper, as gunicorn's workers have, so that applications may
    /// reconfigure() it, write bytes to its buffer or read its name. write_through hands every write to the
    /// error log at once, as before (no request ends with its output still buffered); the encoder runs in C
    /// with the GIL held, so a line print() writes is not split by another thread's. backslashreplace keeps
    /// a lone surrogate (a file name that was not UTF-8) from raising in the application.
    /// </summary>
    private static PyRef TextStream(PyBorrowed buffer)
    {
        using PyRef io = Py.Import("io");
        using PyRef wrapper = io.Borrow().GetAttr("TextIOWrapper");
        using PyRef args = Py.Tuple(buffer);
        using PyRef kwargs = Py.Dict();
        using (PyRef encoding = Py.Str("utf-8"))
        using (PyRef errors = Py.Str("backslashreplace"))
        {
            SetKeyword(kwargs.Borrow(), "encoding", encoding.Borrow());
            SetKeyword(kwargs.Borrow(), "errors", errors.Borrow());
        }
        // Line-buffered as Python's own stderr is (3.9 on) and stdout on a terminal: only a flush() call per line more.
        SetKeyword(kwargs.Borrow(), "line_buffering", Py.True);
        SetKeyword(kwargs.Borrow(), "write_through", Py.True);
        return wrapper.Borrow().Call(args.Borrow(), kwargs.Borrow());

        static void SetKeyword(PyBorrowed kwargs, string name, PyBorrowed value)
        {
            using PyRef key = Py.Str(name);
            Py.SetItem(kwargs, key.Borrow(), value);
        }
    }

    /// <summary>
    /// Flushes sys.stdout and sys.stderr (whatever the application made of them) before the worker exits, as
    /// the interpreter's own shutdown would: text an application chose to buffer (write_through turned off)
    /// still reaches the log.
    /// </summary>
    public static void FlushStandardStreams()
    {
        using Gil.Acquired gil = Gil.Acquire();
        using PyRef sys = Py.Import("sys");
        foreach (string name in (ReadOnlySpan<string>)["stdout", "stderr"])
        {
            try
            {
                using PyRef stream = sys.Borrow().GetAttr(name);
                if (!stream.Borrow().IsNone)
                {
                    using PyRef flush = stream.Borrow().GetAttr("flush");
                    using PyRef ignored = flush.Borrow().CallNoArgs();
                }
            }
            catch (PythonException e)
            {
                // A closed or replaced stream: nothing more can reach the log through it.
                e.ReleaseObjects();
            }
        }
    }

    private static PyRef OptionalItem(PyBorrowed tuple, int index)
    {
        PyBorrowed item = tuple.TupleItem(index);
        return item.IsNone ? default : item.NewRef();
    }

    private static PyRef HookArguments(WorkerHookSpec? hooks)
    {
        if (hooks is null)
        {
            return Py.None.NewRef();
        }
        int level = HookObjects.LevelNumber(hooks.LogLevel);
        using PyRef path = Py.Str(hooks.Path);
        using PyRef source = Py.Str(hooks.SourceBase64);
        using PyRef ppid = Py.Int(hooks.MasterPid);
        using PyRef age = Py.Int(hooks.Age);
        using PyRef levelNumber = Py.Int(level);
        using PyRef workers = Py.Int(hooks.Workers);
        using PyRef procName = Py.Str(hooks.ProcName);
        return Py.Tuple(path.Borrow(), source.Borrow(), ppid.Borrow(), age.Borrow(), levelNumber.Borrow(), workers.Borrow(), procName.Borrow());
    }

    /// <summary>The configuration's <c>worker_exit(server, worker)</c>, if it has one; what it raises is logged.</summary>
    public void RunWorkerExitHook() => RunOnce(ref _workerExit, "worker_exit");

    /// <summary>Whether a quick exit (INT, QUIT) has hooks to run: <c>worker_int</c>, <c>worker_exit</c>.</summary>
    public bool HasQuickExitHooks => !_workerInt.IsNull || !_workerExit.IsNull;

    /// <summary>
    /// gunicorn's quick exit (INT, QUIT): <c>worker_int(worker)</c>, then <c>worker_exit(server, worker)</c>,
    /// as gunicorn's worker calls them before its process ends; what they raise is logged.
    /// </summary>
    public void RunQuickExitHooks()
    {
        RunOnce(ref _workerInt, "worker_int");
        RunOnce(ref _workerExit, "worker_exit");
    }

    /// <summary>
    /// <c>worker_abort(worker)</c>, if the configuration has it: gunicorn calls it when its master aborts a
    /// worker whose request ran past --timeout; Osprey when its own watchdog times a request out.
    /// </summary>
    public bool HasWorkerAbortHook => !_workerAbort.IsNull;

    public void RunWorkerAbortHook() => RunOnce(ref _workerAbort, "worker_abort");

    private static void RunOnce(ref PyRef hook, string name)
    {
        if (hook.IsNull)
        {
            return;
        }
        using Gil.Acquired gil = Gil.Acquire();
        // Taken under the GIL, so a second caller (a quick exit during a drain) finds nothing; the call
        // itself may let other threads run.
        PyRef taken = hook;
        hook = default;
        if (taken.IsNull)
        {
            return;
        }
        try
        {
            using PyRef noArguments = Py.Tuple();
            using PyRef result = taken.Borrow().Call(noArguments.Borrow());
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
            Log.Error($"Exception in {name} hook\n{e.Traceback}");
        }
        finally
        {
            taken.Dispose();
        }
    }
}
