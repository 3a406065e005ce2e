using System.Reflection;
using Osprey.Python;
using Osprey.Wsgi;

namespace Osprey.Bench;

/// <summary>
/// The embedded interpreter and the loaded applications of one benchmark process. CPython is
/// initialised at most once per process, which is what BenchmarkDotNet's child process needs:
/// every GlobalSetup in it goes through here.
/// </summary>
internal static class PythonHost
{
    private static readonly Dictionary<string, WsgiApplication> s_applications = [];

    /// <summary>bench/, found through the path the build recorded (the child process runs from elsewhere).</summary>
    public static string BenchDirectory { get; } =
        typeof(PythonHost).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .First(a => a.Key == "OspreyBenchDirectory").Value!;

    public static string AppsDirectory => Path.Combine(BenchDirectory, "apps");

    /// <summary>Debian's interpreter has Flask; the first python3 on PATH may not.</summary>
    public static string Interpreter => Environment.GetEnvironmentVariable("OSPREY_BENCH_PYTHON") is { Length: > 0 } python
        ? python
        : "/usr/bin/python3";

    /// <summary>The application <paramref name="appModule"/> (module:attribute in bench/apps), loaded once per process.</summary>
    public static WsgiApplication Load(string appModule)
    {
        if (s_applications.TryGetValue(appModule, out WsgiApplication? loaded))
        {
            return loaded;
        }
        EnsureInitialized();
        string[] parts = appModule.Split(':');
        WsgiApplication application = WsgiApplication.Load(new ApplicationSpec(
            appModule, parts[0], parts[1], FactoryArguments: null, PythonPath: [AppsDirectory], RootPath: "",
            Argv: ["osprey-bench", appModule], Multithread: false, Multiprocess: false));
        s_applications[appModule] = application;
        return application;
    }

    public static void EnsureInitialized()
    {
        if (PythonRuntime.Installation is not null)
        {
            return;
        }
        // As the bench servers run: from bench/apps (Flask resolves its root path from there).
        Directory.SetCurrentDirectory(AppsDirectory);
        PythonRuntime.Initialize(PythonInstallation.Discover(Interpreter));
    }

    /// <summary>What wrk sends, plus the two headers most clients add: the request of every benchmark here.</summary>
    public static RequestHead HelloRequest()
    {
        var request = new RequestHead
        {
            Method = "GET",
            Version = Osprey.Wsgi.HttpVersion.Http11,
            Scheme = "http",
            RemoteAddress = "127.0.0.1",
            RemotePort = 40000,
            LocalAddress = "127.0.0.1",
            LocalPort = 8000,
        };
        request.SetTarget("/"u8);
        request.AddHeader("Host"u8, "127.0.0.1:8000"u8);
        request.AddHeader("User-Agent"u8, "wrk"u8);
        request.AddHeader("Accept"u8, "*/*"u8);
        return request;
    }
}
