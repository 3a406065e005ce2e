using System.Net.Sockets;
using System.Text;
using System.Runtime.InteropServices;
using Osprey.Cli;
using Osprey.Http;
using Osprey.Http.Kestrel;
using Osprey.Logging;
using Osprey.Python;
using Osprey.Wsgi;

namespace Osprey.Supervision;

/// <summary>
/// One worker process: started by the <see cref="Master"/> with its listeners already bound and
/// inherited, it embeds Python, loads the application, reports ready, serves, and on TERM finishes
/// what is in flight within --graceful-timeout.
/// </summary>
public static class Server
{
    /// <param name="hooks">The configuration file's text, when it has worker hooks (post_fork, post_worker_init, pre_request, post_request, worker_exit, worker_int, worker_abort).</param>
    public static int Run(OspreyOptions options, IReadOnlyList<string> argv, WorkerContext context, HookSource? hooks = null)
    {
        Daemon.DetachWorker();
        Log.Configure(ToSeverity(options.LogLevel), options.ErrorLog, options.AccessLog, options.CaptureOutput);
        using Statsd? statsd = Statsd.Start(options.StatsdHost, options.StatsdPrefix, options.DogstatsdTags);
        var boot = System.Diagnostics.Stopwatch.StartNew();
        long startedAfter = (long)(DateTime.Now - System.Diagnostics.Process.GetCurrentProcess().StartTime).TotalMilliseconds;
        WorkerLifecycle.Attach(context);
        string name = options.Name ?? options.App;
        Posix.SetProcessTitle($"osprey-w{context.Slot}", $"osprey: worker {context.Slot} [{name}] generation {context.Generation} booting");

        var listeners = new List<Socket>(context.ListenerFds.Count);
        foreach (int fd in context.ListenerFds)
        {
            listeners.Add(new Socket(new SafeSocketHandle(fd, ownsHandle: true)));
        }

        // What needs the master's privileges comes before the switch to --user: a hard open-file
        // limit above the soft one, and the certificate's key file (root's alone, usually).
        long openFiles = Posix.RaiseOpenFileLimit();
        if (openFiles >= 0 && options.MaxConnections > 0 && openFiles < options.MaxConnections)
        {
            Log.Warning($"--max-connections {options.MaxConnections}: the open-file limit is {openFiles}; connections beyond it fail to be accepted (raise it with ulimit -n)");
        }
        TlsCertificate? tls;
        try
        {
            tls = options.CertFile is null ? null : TlsCertificate.Load(options.CertFile, options.KeyFile, options.CaCerts, options.CertReqs);
        }
        catch (TlsCertificateException e)
        {
            // The files changed since the master checked them (a reload): the old workers keep serving.
            WorkerLifecycle.ReportFailure(1, e.Message);
            return 1;
        }
        using TlsCertificate? tlsScope = tls;
        if (SwitchIdentity(options) is string switchError)
        {
            WorkerLifecycle.ReportFailure(1, switchError);
            return 1;
        }

        WsgiApplication application;
        try
        {
            WorkerHookSpec? hookSpec = hooks is null ? null : new WorkerHookSpec(
                hooks.Path, hooks.SourceBase64, context.MasterPid, context.Generation, ToSeverity(options.LogLevel), options.Workers, name);
            application = LoadApplication(options, argv, context.PythonProbe, boot, startedAfter, hookSpec, context.InInterpreter);
        }
        catch (ApplicationLoadException e)
        {
            // The master shows this once, however many workers fail the same way.
            WorkerLifecycle.ReportFailure(e.ExitCode, e.Text);
            return e.ExitCode;
        }

        RequestWatchdog? watchdog;
        try
        {
            watchdog = options.Timeout > 0 ? new RequestWatchdog(TimeSpan.FromSeconds(options.Timeout), reason => OnRequestTimedOut(application, reason)) : null;
        }
        catch (PythonStartupException e)
        {
            WorkerLifecycle.ReportFailure(1, e.Message);
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
            ProxyAllowFrom = options.ProxyAllowFrom ?? options.ForwardedAllowIps,
            ProxyProtocol = options.ProxyProtocol,
            Tls = tls,
        };

        // The master only binds; a slot's sockets start listening when its first worker can serve.
        if (!WorkerLifecycle.ListenThroughMaster())
        {
            return 0;
        }
        IHttpEngine engine = HttpEngines.Start(options.Engine, listeners, workers, settings);
        WorkerLifecycle.PrepareQuickExit(() => workers.RequestCount, application.HasQuickExitHooks ? application.RunQuickExitHooks : null,
            TimeSpan.FromSeconds(Math.Max(1, options.GracefulTimeout)));
        Log.Debug($"Worker boot: application loaded and engine started at {boot.ElapsedMilliseconds} ms");
        Log.Info($"Booting worker with pid: {Environment.ProcessId}");
        WorkerLifecycle.ReportReady();
        if (options.Reload)
        {
            CodeReloader.Start(options.ReloadExtraFiles, file => WorkerLifecycle.RequestReload($"{file} modified (--reload)"));
        }
        WorkerLifecycle.StartHeartbeat(
            () => workers.RequestCount,
            HeartbeatInterval(options.Timeout),
            requests => Posix.SetProcessTitle(null,
                $"osprey: worker {context.Slot} [{name}] generation {context.Generation} requests {requests}{(WorkerLifecycle.StopRequested.WaitOne(0) ? " stopping" : "")}"));

        WorkerLifecycle.StopRequested.WaitOne();
        Posix.SetProcessTitle($"osprey-w{context.Slot}", $"osprey: worker {context.Slot} [{name}] generation {context.Generation} stopping");
        engine.StopAsync(TimeSpan.FromSeconds(options.GracefulTimeout)).GetAwaiter().GetResult();
        engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
        long served = workers.RequestCount;
        application.RunWorkerExitHook();
        WsgiApplication.FlushStandardStreams();
        Log.Info($"Worker exiting (pid: {Environment.ProcessId}): served {served} requests");
        WorkerLifecycle.ReportExiting(served);
        return 0;
    }

    /// <summary>Becomes --user/--group, if given; null, or one line saying why not.</summary>
    private static string? SwitchIdentity(OspreyOptions options)
    {
        RunAs? runAs = RunAs.Resolve(options.User, options.Group, options.Initgroups, out string? error);
        if (runAs is null)
        {
            return error;
        }
        if (runAs.Switch() is string switchError)
        {
            return switchError;
        }
        // The kernel clears the parent-death signal when a process changes its credentials.
        WorkerLifecycle.ArmParentDeathSignal();
        return null;
    }

    /// <summary>
    /// <c>--check-config</c>, as gunicorn's: the options are valid (they were parsed), the certificate
    /// loads, --user and --group exist, and the application imports; nothing is bound or served. 0 if
    /// so; otherwise the traceback, if any, and one line on stderr, and 1.
    /// </summary>
    public static int CheckApplication(OspreyOptions options, IReadOnlyList<string> argv)
    {
        // As a start would: the master resolves --user and --group before anything else.
        RunAs.Resolve(options.User, options.Group, options.Initgroups, out string? runAsError);
        if (runAsError is not null)
        {
            Console.Error.WriteLine($"osprey: error: {runAsError}");
            return 1;
        }
        try
        {
            if (options.CertFile is not null)
            {
                TlsCertificate.Load(options.CertFile, options.KeyFile, options.CaCerts, options.CertReqs).Dispose();
            }
            // The application is imported where a worker would import it: inside the interpreter, by a copy of
            // this command that InterpreterHost starts there (and that finds the variable set).
            string? check = Environment.GetEnvironmentVariable(InterpreterHost.CheckVariable);
            Posix.Unsetenv(InterpreterHost.CheckVariable);
            if (check is null && InterpreterHost.Find() is { } host)
            {
                return CheckInsideInterpreter(options, argv, host);
            }
            string probe = check is not null && check.StartsWith("inside:", StringComparison.Ordinal)
                ? Encoding.UTF8.GetString(Convert.FromBase64String(check["inside:".Length..])) : "";
            LoadApplication(options, argv, probe, System.Diagnostics.Stopwatch.StartNew(), 0, inInterpreter: probe.Length > 0);
            return 0;
        }
        catch (TlsCertificateException e)
        {
            Console.Error.WriteLine($"osprey: error: {e.Message}");
            return 1;
        }
        catch (PythonStartupException e)
        {
            Console.Error.WriteLine($"osprey: error: {e.Message}");
            return 1;
        }
        catch (ApplicationLoadException e)
        {
            Console.Error.WriteLine(e.Text.Contains('\n', StringComparison.Ordinal)
                ? e.Text[..(e.Text.LastIndexOf('\n') + 1)] + "osprey: error: " + e.Text[(e.Text.LastIndexOf('\n') + 1)..]
                : "osprey: error: " + e.Text);
            return 1;
        }
    }

    /// <summary>Runs this command again inside the interpreter, with the same standard streams; its exit code.</summary>
    private static int CheckInsideInterpreter(OspreyOptions options, IReadOnlyList<string> argv, InterpreterHost host)
    {
        // The interpreter starts with what a worker's would: -e variables in its environment, --chdir for its directory.
        SetEnvironment(options);
        PythonInstallation python = PythonInstallation.Discover(PythonInstallation.ChooseInterpreter(options.Python), options.Chdir);
        System.Diagnostics.ProcessStartInfo start = host.StartInfo(python.Executable, argv.Skip(1).ToArray());
        start.Environment[InterpreterHost.CheckVariable] = "inside:" + Convert.ToBase64String(Encoding.UTF8.GetBytes(python.ToProbeText()));
        using System.Diagnostics.Process process = System.Diagnostics.Process.Start(start)
            ?? throw new PythonStartupException($"cannot run {python.Executable}");
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>Sets -e / raw_env in the C environment, which the interpreter reads when it starts.</summary>
    private static void SetEnvironment(OspreyOptions options)
    {
        foreach (KeyValuePair<string, string> variable in options.Environment)
        {
            PythonRuntime.SetEnvironmentVariable(variable.Key, variable.Value);
        }
    }

    /// <summary>The application could not be loaded: <see cref="Text"/> is the traceback (if any) and then one line.</summary>
    private sealed class ApplicationLoadException(int exitCode, string text) : Exception(text)
    {
        public int ExitCode { get; } = exitCode;
        public string Text { get; } = text;
    }

    private static WsgiApplication LoadApplication(OspreyOptions options, IReadOnlyList<string> argv, string pythonProbe,
        System.Diagnostics.Stopwatch boot, long startedAfter, WorkerHookSpec? hooks = null, bool inInterpreter = false)
    {
        try
        {
            if (options.Chdir is not null)
            {
                Directory.SetCurrentDirectory(options.Chdir);
            }
            SetEnvironment(options);
            // In a worker, the master asked the interpreter already (once for all workers).
            string interpreter = PythonInstallation.ChooseInterpreter(options.Python);
            PythonInstallation python = pythonProbe.Length > 0
                ? PythonInstallation.FromProbeText(interpreter, pythonProbe)
                : PythonInstallation.Discover(interpreter);
            long discovered = boot.ElapsedMilliseconds;
            if (inInterpreter)
            {
                PythonRuntime.AttachToHost(python);
            }
            else
            {
                PythonRuntime.Initialize(python);
            }
            Log.Debug($"Worker boot: runtime up {startedAfter} ms after exec, Python found in {discovered} ms, initialised at {boot.ElapsedMilliseconds} ms");
            Log.Debug(inInterpreter
                ? $"Using Python {python.Version}: this worker runs inside {python.Executable}"
                : $"Using Python {python.Version} at {python.Executable} ({python.SharedLibrary})");
            try
            {
                return WsgiApplication.Load(new ApplicationSpec(
                    options.App, options.AppModule, options.AppAttribute, options.FactoryArguments, options.PythonPath,
                    options.RootPath, argv, Multithread: options.Threads > 1, Multiprocess: options.Workers > 1)
                {
                    ForwardedAllowIps = options.ForwardedAllowIps,
                    AccessLogFormat = options.AccessLogFormat,
                    Hooks = hooks,
                    Sendfile = options.Sendfile,
                });
            }
            catch (PythonStartupException e)
            {
                throw new ApplicationLoadException(BootExitCode(e), TextOf(e));
            }
        }
        catch (PythonStartupException e)
        {
            // The interpreter could not be found or started: 1, unless Python itself failed in it (a traceback).
            throw new ApplicationLoadException(e.PythonTraceback is null ? 1 : WorkerBootError, TextOf(e));
        }
        catch (IOException e)
        {
            throw new ApplicationLoadException(1, $"--chdir: {e.Message}");
        }
    }

    private static string TextOf(PythonStartupException e) =>
        e.PythonTraceback is { Length: > 0 } traceback ? traceback + "\n" + e.Message : e.Message;

    // gunicorn's worker exit codes, which the master passes on as its own: supervisors tell a server
    // that cannot boot from an application reference that names nothing.
    private const int WorkerBootError = 3;
    private const int AppLoadError = 4;

    /// <summary>
    /// As gunicorn: 3 when the module cannot be imported (it is missing, or its code raises) or a hook
    /// raises; 4 when the module imports but the name given does not lead to an application (gunicorn's
    /// AppImportError: a missing attribute, None, not callable). The loader says the latter as one line
    /// without a traceback; the only such lines for the former are the missing module and the hook.
    /// </summary>
    private static int BootExitCode(PythonStartupException e) =>
        e.PythonTraceback is not null
        || e.Message.StartsWith("No module named ", StringComparison.Ordinal)
        || e.Message.StartsWith("The configuration's ", StringComparison.Ordinal)
            ? WorkerBootError
            : AppLoadError;

    /// <summary>Several beats per --timeout so one late beat is not a kill; at least once a second for the counts.</summary>
    private static TimeSpan HeartbeatInterval(int timeout) =>
        TimeSpan.FromMilliseconds(timeout <= 0 ? 1000 : Math.Clamp(timeout * 1000 / 4, 100, 1000));

    /// <summary>
    /// This process should be replaced gracefully (a request timed out: its Python thread may never come
    /// back): the master starts a replacement and drains this worker once it is ready.
    /// </summary>
    public static void RequestRecycle(string reason) => WorkerLifecycle.RequestRecycle(reason);

    /// <summary>
    /// The watchdog answered a request that ran past --timeout: the worker asks to be replaced and, as
    /// gunicorn's worker does when its master aborts it for a timeout, runs the configuration's
    /// worker_abort hook, once. On a thread of its own: the hook needs the GIL, which the hung code may hold.
    /// </summary>
    private static void OnRequestTimedOut(WsgiApplication application, string reason)
    {
        RequestRecycle(reason);
        if (application.HasWorkerAbortHook)
        {
            new Thread(application.RunWorkerAbortHook) { IsBackground = true, Name = "osprey-abort-hook" }.Start();
        }
    }

    internal static Severity ToSeverity(Cli.LogLevel level) => level switch
    {
        Cli.LogLevel.Debug => Severity.Debug,
        Cli.LogLevel.Info => Severity.Info,
        Cli.LogLevel.Warning => Severity.Warning,
        Cli.LogLevel.Error => Severity.Error,
        _ => Severity.Critical,
    };
}
