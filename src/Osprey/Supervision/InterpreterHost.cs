using System.Diagnostics;
using System.Runtime.CompilerServices;
using Osprey.Cli;

namespace Osprey.Supervision;

/// <summary>
/// Starts a worker inside the Python interpreter's own executable (<c>python -c</c>, which loads
/// Osprey and calls its entry point) rather than as an osprey process that embeds libpython.
/// Debian's <c>python3</c>, like most distributions' and pyenv's default builds, links CPython
/// statically, and that copy runs Python code faster than the position-independent
/// libpython3.X.so (Flask 14%, Django 22% here: bench/README.md). It also serves interpreters
/// that have no shared library at all. The Native AOT build hosts through its shared library
/// (<c>osprey.so</c>, published beside the executable), the JIT build through the .NET host
/// (hostfxr) that started this process. <c>OSPREY_EMBED=1</c>, or a build without either, keeps
/// workers as osprey processes that embed libpython. <c>--check-config</c> runs its check the same way.
/// </summary>
internal sealed class InterpreterHost
{
    public const string EmbedVariable = "OSPREY_EMBED";

    /// <summary>
    /// Set by <c>--check-config</c> for the copy of itself it runs inside the interpreter: <c>inside:</c>
    /// and the interpreter's facts (base64), or <c>embed</c> when that copy fell back to embedding.
    /// </summary>
    public const string CheckVariable = "OSPREY_CHECK_CONFIG";

    // Runs as __main__ with sys.argv = ['-c', kind, library, dotnet_root, assembly, fallback, '--', osprey arguments...].
    // Everything stays local to one function that removes itself, so the application finds __main__ as empty
    // as an embedded interpreter leaves it. A host that cannot be loaded falls back to the osprey executable,
    // which embeds libpython; nothing of .NET has run by then.
    private static readonly string Bootstrap = $$"""
def _osprey_worker():
    import os, signal, sys
    del globals()['_osprey_worker']
    kind, library, dotnet_root, assembly, fallback = sys.argv[1:6]
    args = sys.argv[7:]
    del sys.argv[1:]
    if sys.path and sys.path[0] == '':
        del sys.path[0]
    # Osprey reads these from the C environment, which os.putenv alone changes; the application must not see them.
    hidden = {}
    for name in ('{{WorkerContext.EnvironmentVariable}}', '{{ConfigFile.WorkerVariable}}', '{{ConfigFile.HooksVariable}}', '{{Daemon.WorkerVariable}}', '{{CheckVariable}}'):
        if name in os.environ:
            hidden[name] = os.environ.pop(name)
            os.putenv(name, hidden[name])
    # INT stops a worker gracefully (Osprey's handler, as gunicorn's), never as a KeyboardInterrupt in the application.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import ctypes  # an optional module: a Python built without libffi has none
        strings = lambda items: (ctypes.c_char_p * len(items))(*[os.fsencode(item) for item in items])
        if kind == 'native':
            main = ctypes.CDLL(library).osprey_main
            main.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))
            main.restype = ctypes.c_int
            start = lambda: main(len(args), strings(args))
        else:
            class Parameters(ctypes.Structure):
                _fields_ = [('size', ctypes.c_size_t), ('host_path', ctypes.c_char_p), ('dotnet_root', ctypes.c_char_p)]
            fxr = ctypes.CDLL(library)
            init = fxr.hostfxr_initialize_for_dotnet_command_line
            init.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(Parameters), ctypes.POINTER(ctypes.c_void_p))
            init.restype = ctypes.c_int32
            run = fxr.hostfxr_run_app
            run.argtypes = (ctypes.c_void_p,)
            run.restype = ctypes.c_int32
            parameters = Parameters(ctypes.sizeof(Parameters), None, os.fsencode(dotnet_root) if dotnet_root else None)
            handle = ctypes.c_void_p()
            command = [assembly] + args
            status = init(len(command), strings(command), ctypes.byref(parameters), ctypes.byref(handle))
            if status != 0:
                raise OSError('hostfxr_initialize_for_dotnet_command_line failed (0x%08x)' % (status & 0xffffffff))
            start = lambda: run(handle)
    except Exception as e:
        sys.stderr.write('osprey: cannot run the worker inside %s (%s); it embeds libpython instead\n' % (sys.executable, e))
        sys.stderr.flush()
        # This worker (WorkerContext.Encode's field), or this --check-config, embeds after all.
        if '{{WorkerContext.EnvironmentVariable}}' in hidden:
            os.putenv('{{WorkerContext.EnvironmentVariable}}', hidden['{{WorkerContext.EnvironmentVariable}}'].replace('in-interpreter=1', 'in-interpreter=0'))
        if '{{CheckVariable}}' in hidden:
            os.putenv('{{CheckVariable}}', 'embed')
        os.execv(fallback, [fallback] + args)
    # A CDLL call releases the GIL, so Osprey starts where its embedding would after PyEval_SaveThread.
    status = start()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status & 0xff)
_osprey_worker()
""";

    private readonly string _kind;
    private readonly string _library;
    private readonly string _dotnetRoot;
    private readonly string _assembly;

    private InterpreterHost(string kind, string library, string dotnetRoot, string assembly)
    {
        _kind = kind;
        _library = library;
        _dotnetRoot = dotnetRoot;
        _assembly = assembly;
    }

    /// <summary>How this build can run inside an interpreter; null when it cannot, or OSPREY_EMBED=1 says not to.</summary>
    public static InterpreterHost? Find()
    {
        if (Environment.GetEnvironmentVariable(EmbedVariable) == "1")
        {
            return null;
        }
        string directory = AppContext.BaseDirectory;
        if (!RuntimeFeature.IsDynamicCodeSupported)
        {
            string library = Path.Combine(directory, "osprey.so");
            return File.Exists(library) ? new InterpreterHost("native", library, "", "") : null;
        }
        string assembly = Path.Combine(directory, "osprey.dll");
        string? hostfxr = LoadedHostfxr();
        if (hostfxr is null || !File.Exists(assembly) || !File.Exists(Path.Combine(directory, "osprey.runtimeconfig.json")))
        {
            return null;
        }
        // <root>/host/fxr/<version>/libhostfxr.so in an installed .NET; an app-local hostfxr finds its runtime itself.
        string? fxrVersionDirectory = Path.GetDirectoryName(hostfxr);
        string? fxrDirectory = Path.GetDirectoryName(fxrVersionDirectory);
        string? hostDirectory = Path.GetDirectoryName(fxrDirectory);
        string dotnetRoot = Path.GetFileName(fxrDirectory) == "fxr" && Path.GetFileName(hostDirectory) == "host"
            ? Path.GetDirectoryName(hostDirectory) ?? "" : "";
        return new InterpreterHost("dotnet", hostfxr, dotnetRoot, assembly);
    }

    /// <summary>The hostfxr that started this process, as the dynamic loader mapped it.</summary>
    private static string? LoadedHostfxr()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/maps"))
            {
                int path = line.IndexOf('/', StringComparison.Ordinal);
                if (path > 0 && line.EndsWith("/libhostfxr.so", StringComparison.Ordinal))
                {
                    return line[path..];
                }
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    /// <summary>How to start <paramref name="interpreter"/> with a worker inside, given osprey's <paramref name="arguments"/>.</summary>
    public ProcessStartInfo StartInfo(string interpreter, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(interpreter) { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(Bootstrap);
        start.ArgumentList.Add(_kind);
        start.ArgumentList.Add(_library);
        start.ArgumentList.Add(_dotnetRoot);
        start.ArgumentList.Add(_assembly);
        start.ArgumentList.Add(Environment.ProcessPath ?? "");
        start.ArgumentList.Add("--");
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        return start;
    }
}
