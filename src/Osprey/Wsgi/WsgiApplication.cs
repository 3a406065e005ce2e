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
}

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

def load(module_name, attribute, factory_args, extra_paths, argv):
    sys.argv = list(argv)
    # As gunicorn: the working directory (after --chdir) is importable, --pythonpath entries first.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for p in reversed(extra_paths):
        sys.path.insert(0, os.path.abspath(p))
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
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if not callable(target):
            raise OspreyLoadError("'%s:%s' is not callable, so it cannot be used as an application factory." % (module_name, attribute))
        target = target(*args, **kwargs)
    if target is None:
        raise OspreyLoadError("Failed to find application object: '%s:%s' is None." % (module_name, attribute))
    if not callable(target):
        raise OspreyLoadError("Application object must be callable: '%s' is %s." % (
            module_name + ':' + attribute, type(target).__name__))
    return target
""";

    private readonly PyRef _callable;

    internal WsgiTypes Types { get; }
    internal EnvironBuilder Environ { get; }
    internal AccessLogFormat AccessLogFormat { get; }
    internal PyBorrowed Callable => _callable.Borrow();

    private WsgiApplication(PyRef callable, WsgiTypes types, EnvironBuilder environ, AccessLogFormat accessLogFormat)
    {
        _callable = callable;
        Types = types;
        Environ = environ;
        AccessLogFormat = accessLogFormat;
    }

    /// <summary>
    /// Imports the application with the GIL taken for the duration. Throws
    /// <see cref="PythonStartupException"/> with the message (and traceback) to show the user.
    /// </summary>
    public static WsgiApplication Load(ApplicationSpec spec)
    {
        using Gil.Acquired gil = Gil.Acquire();
        var types = new WsgiTypes();
        using PyRef stdout = types.Errors.Instantiate(new ErrorStreamObject(1));
        using PyRef errors = types.Errors.Instantiate(new ErrorStreamObject(2));
        using (PyRef sys = Py.Import("sys"))
        {
            // print() and sys.stderr go to the error log, as wsgi.errors does.
            Py.SetAttr(sys.Borrow(), "stdout", stdout.Borrow());
            Py.SetAttr(sys.Borrow(), "stderr", errors.Borrow());
        }

        PyRef callable;
        try
        {
            using PyRef ns = Py.Run(Loader, "<osprey loader>");
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
            using PyRef args = Py.Tuple(module.Borrow(), attribute.Borrow(), factory.Borrow(), paths.Borrow(), argv.Borrow());
            callable = load.Borrow().Call(args.Borrow());
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
        return new WsgiApplication(callable, types, environ, spec.AccessLogFormat);
    }
}
