using System.Text;
using BenchmarkDotNet.Attributes;
using Osprey.Python;
using Osprey.Wsgi;

namespace Osprey.Bench;

/// <summary>
/// One request through the real WSGI layer (WsgiWorker: environ, the application call,
/// start_response, iterating and framing the result) against the same application called from a
/// Python loop in the same interpreter; the difference is what the bridge costs per request.
/// </summary>
[MemoryDiagnoser]
public class BridgeBenchmarks
{
    private const int PythonLoopCalls = 1000;

    // The application alone: the loop a WSGI server written in Python would run, minus its I/O;
    // and the same call for one environ that Osprey built.
    private const string PythonLoop = """
def make_loop(app, template):
    def start_response(status, headers, exc_info=None):
        return None
    def loop(n):
        for _ in range(n):
            result = app(template.copy(), start_response)
            for _ in result:
                pass
            if type(result) is not list and type(result) is not tuple:
                close = getattr(result, 'close', None)
                if close is not None:
                    close()
    def call(environ):
        result = app(environ, start_response)
        for _ in result:
            pass
        if type(result) is not list and type(result) is not tuple:
            close = getattr(result, 'close', None)
            if close is not None:
                close()
    return loop, call
""";

    private PythonThread? _thread;
    private int _setupThreadId;
    private WsgiWorker? _worker;
    private MemoryExchange? _exchange;
    private WsgiApplication? _application;
    private PyRef _input;
    private PyRef _loop;
    private PyRef _loopArgs;
    private PyRef _call;

    [Params("hello", "flask")]
    public string App { get; set; } = "hello";

    [GlobalSetup]
    public void Setup()
    {
        WsgiApplication application = PythonHost.Load(App == "hello" ? "hello:app" : "flask_app:app");
        _setupThreadId = Environment.CurrentManagedThreadId;
        // The benchmark thread holds the GIL throughout, as a Python worker thread does while requests are queued.
        _thread = new PythonThread();
        _thread.Attach();
        _thread.TakeGil();

        // With a request slot, as under the default --timeout: its bookkeeping is part of every request.
        _worker = new WsgiWorker(application, new RequestSlot("python-0"));
        _exchange = new MemoryExchange(PythonHost.HelloRequest());
        Request();
        if (!_exchange.Completed || _exchange.Head?.StatusCode != 200 || !_exchange.Body.SequenceEqual("Hello, World!"u8))
        {
            throw new InvalidOperationException(
                $"{App}: expected 200 'Hello, World!', got {_exchange.Head?.StatusCode} '{Encoding.Latin1.GetString(_exchange.Body)}'");
        }

        _application = application;
        using PyRef io = Py.Import("io");
        using PyRef bytesIO = io.Borrow().GetAttr("BytesIO");
        _input = bytesIO.Borrow().CallNoArgs();
        using PyRef template = application.Environ.Build(_exchange.Request, _input.Borrow());
        using PyRef ns = Py.Run(PythonLoop, "<osprey bench loop>");
        using PyRef loopArgs = Py.Tuple(application.Callable, template.Borrow());
        using PyRef functions = Py.GetItem(ns.Borrow(), "make_loop\0"u8).Call(loopArgs.Borrow());
        _loop = functions.Borrow().TupleItem(0).NewRef();
        _call = functions.Borrow().TupleItem(1).NewRef();
        using PyRef count = Py.Int(PythonLoopCalls);
        _loopArgs = Py.Tuple(count.Borrow());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _loop.Dispose();
        _loopArgs.Dispose();
        _call.Dispose();
        _input.Dispose();
        _thread?.DropGil();
    }

    /// <summary>One request through WsgiWorker.Handle, as an engine dispatches it.</summary>
    [Benchmark(Description = "osprey-bridge")]
    public int Request()
    {
        if (Environment.CurrentManagedThreadId != _setupThreadId)
        {
            throw new InvalidOperationException("the benchmark runs on another thread than its GlobalSetup, which holds the GIL");
        }
        MemoryExchange exchange = _exchange!;
        exchange.BeginRequest();
        _worker!.Handle(exchange);
        return exchange.BodyLength;
    }

    /// <summary>
    /// Osprey's environ, then the application called from Python with a Python start_response:
    /// the bridge without its native start_response, write and wsgi.input objects and response handling.
    /// </summary>
    [Benchmark(Description = "environ+python-call")]
    public nint EnvironThenPythonCall()
    {
        using PyRef environ = _application!.Environ.Build(_exchange!.Request, _input.Borrow());
        using PyRef args = Py.Tuple(environ.Borrow());
        using PyRef result = _call.Borrow().Call(args.Borrow());
        return result.Handle;
    }

    /// <summary>The application called from Python with a copy of the same environ: its own cost.</summary>
    [Benchmark(Description = "python-loop", OperationsPerInvoke = PythonLoopCalls)]
    public nint PythonOnly()
    {
        using PyRef result = _loop.Borrow().Call(_loopArgs.Borrow());
        return result.Handle;
    }
}

/// <summary>The environ alone: a copy of the template and the request's own keys, then freed.</summary>
[MemoryDiagnoser]
public class EnvironBenchmarks
{
    private PythonThread? _thread;
    private WsgiApplication? _application;
    private RequestHead? _request;

    [GlobalSetup]
    public void Setup()
    {
        _application = PythonHost.Load("hello:app");
        _thread = new PythonThread();
        _thread.Attach();
        _thread.TakeGil();
        _request = PythonHost.HelloRequest();
    }

    [GlobalCleanup]
    public void Cleanup() => _thread?.DropGil();

    [Benchmark(Description = "environ-build")]
    public nint Build()
    {
        using PyRef environ = _application!.Environ.Build(_request!, Py.None);
        return environ.Handle;
    }
}
