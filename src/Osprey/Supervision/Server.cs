using System.Net.Sockets;
using System.Runtime.InteropServices;
using Osprey.Cli;
using Osprey.Http;
using Osprey.Logging;
using Osprey.Python;
using Osprey.Wsgi;

namespace Osprey.Supervision;

/// <summary>
/// One serving process: binds, embeds Python, loads the application and serves until TERM/INT.
/// </summary>
public static class Server
{
    public static int Run(OspreyOptions options, IReadOnlyList<string> argv)
    {
        Log.Configure(ToSeverity(options.LogLevel), options.ErrorLog, options.AccessLog);
        string version = typeof(Server).Assembly.GetName().Version?.ToString(3) ?? "0";
        Log.Info($"Starting osprey {version}");

        IReadOnlyList<Socket> listeners;
        try
        {
            listeners = Listeners.Bind(options.Binds, options.Backlog);
        }
        catch (ListenerException e)
        {
            Log.Error(e.Message);
            return 1;
        }
        foreach (BindAddress bind in options.Binds)
        {
            Log.Info($"Listening at: {Listeners.Describe(bind)} ({Environment.ProcessId})");
        }

        WsgiApplication application;
        try
        {
            if (options.Chdir is not null)
            {
                Directory.SetCurrentDirectory(options.Chdir);
            }
            foreach (KeyValuePair<string, string> variable in options.Environment)
            {
                PythonRuntime.SetEnvironmentVariable(variable.Key, variable.Value);
            }
            PythonInstallation python = PythonInstallation.Discover(PythonInstallation.ChooseInterpreter(options.Python));
            PythonRuntime.Initialize(python);
            Log.Info($"Using Python {python.Version} at {python.Executable} ({python.SharedLibrary})");
            application = WsgiApplication.Load(new ApplicationSpec(
                options.App, options.AppModule, options.AppAttribute, options.FactoryArguments, options.PythonPath,
                options.RootPath, argv, Multithread: options.Threads > 1, Multiprocess: options.Workers > 1)
            {
                ForwardedAllowIps = options.ForwardedAllowIps,
            });
        }
        catch (PythonStartupException e)
        {
            if (e.PythonTraceback is { Length: > 0 } traceback)
            {
                Log.Raw(System.Text.Encoding.UTF8.GetBytes(traceback + "\n"));
            }
            Log.Error(e.Message);
            return e.PythonTraceback is null ? 1 : 3;
        }
        catch (IOException e)
        {
            Log.Error($"--chdir: {e.Message}");
            return 1;
        }
        Log.Info($"Application {options.App} loaded; {options.Threads} Python thread(s)");
        if (options.Workers > 1)
        {
            Log.Warning($"--workers {options.Workers}: this version serves from one process; use --threads for concurrency");
        }

        long openFiles = Posix.RaiseOpenFileLimit();
        if (openFiles >= 0 && options.MaxConnections > 0 && openFiles < options.MaxConnections)
        {
            Log.Warning($"--max-connections {options.MaxConnections}: the open-file limit is {openFiles}; connections beyond it fail to be accepted (raise it with ulimit -n)");
        }
        RequestWatchdog? watchdog;
        try
        {
            watchdog = options.Timeout > 0 ? new RequestWatchdog(TimeSpan.FromSeconds(options.Timeout), RequestRecycle) : null;
        }
        catch (PythonStartupException e)
        {
            Log.Error(e.Message);
            return 1;
        }
        using RequestWatchdog? watchdogScope = watchdog;
        using var workers = new PythonWorkers(application, options.Threads, watchdog);
        var settings = new HttpSettings(
            BodyBufferSize: options.BodyBufferSize,
            MaxRequestBodySize: options.LimitRequestBody > 0 ? options.LimitRequestBody : null,
            KeepAlive: TimeSpan.FromSeconds(options.KeepAlive),
            MaxRequestLine: options.LimitRequestLine,
            MaxRequestHeaders: options.LimitRequestFields,
            MaxRequestFieldSize: options.LimitRequestFieldSize,
            HeaderTimeout: TimeSpan.FromSeconds(options.HeaderTimeout),
            MinRequestBodyRate: options.MinRequestBodyRate,
            MaxConnections: options.MaxConnections,
            Backlog: options.Backlog)
        {
            ForwardedAllowIps = options.ForwardedAllowIps,
            ProxyProtocol = options.ProxyProtocol,
        };

        using var stop = new ManualResetEventSlim();
        using PosixSignalRegistration term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Set(); });
        using PosixSignalRegistration interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stop.Set(); });

        IHttpEngine engine = HttpEngines.Start(options.Engine, listeners, workers, settings);
        Log.Info($"Booting worker with pid: {Environment.ProcessId}");
        stop.Wait();
        Log.Info("Shutting down: stopping accepting, finishing requests in flight");
        engine.StopAsync(TimeSpan.FromSeconds(options.GracefulTimeout)).GetAwaiter().GetResult();
        engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
        foreach (BindAddress bind in options.Binds)
        {
            if (bind is BindAddress.Unix unix)
            {
                File.Delete(unix.Path);
            }
        }
        Log.Info("Shutdown complete");
        return 0;
    }

    /// <summary>
    /// This process should be replaced gracefully (a request timed out: its Python thread may
    /// never come back). The master process (issue #5) connects this to its recycle hook; until
    /// then it only logs.
    /// </summary>
    public static void RequestRecycle(string reason) =>
        Log.Warning($"Recycle requested: {reason} (no master process to replace this one yet)");

    private static Severity ToSeverity(Cli.LogLevel level) => level switch
    {
        Cli.LogLevel.Debug => Severity.Debug,
        Cli.LogLevel.Info => Severity.Info,
        Cli.LogLevel.Warning => Severity.Warning,
        Cli.LogLevel.Error => Severity.Error,
        _ => Severity.Critical,
    };
}
