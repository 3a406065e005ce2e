using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Osprey.Cli;
using Osprey.Http.Kestrel;
using Osprey.Logging;

namespace Osprey.Supervision;

/// <summary>
/// The master process (gunicorn's arbiter), which `osprey` always is, even with one worker: it binds every
/// listener, starts the workers as child processes of this same executable, and supervises them. No Python is
/// ever loaded here, so nothing an application does can wedge it.
///
/// Sockets. A TCP bind gets one SO_REUSEPORT listening socket per worker SLOT, opened by the master and kept
/// open for its whole life: the kernel hashes each new connection to one socket of the group, which spreads
/// load evenly (a single shared socket lets the most recently waiting worker win most accepts). Because the
/// master keeps the slot's socket open, connections queued on it survive the slot's worker crashing or being
/// recycled: the replacement inherits the same socket and accepts them; during a reload or a recycle, old and
/// new worker of a slot share it. When slots are removed (TTOU, a reload to fewer workers), new connections are
/// steered away from their sockets before those close (<see cref="ReusePortSteering"/>). Unix sockets and
/// fd:// / systemd sockets are one socket shared by all workers. The master clears FD_CLOEXEC on exactly the descriptors a worker must inherit, just around its start.
///
/// Only the main thread starts workers: PR_SET_PDEATHSIG (the worker's "master is gone" signal) fires when the
/// thread that forked it ends, not the process. Everything else reaches the main thread as an event.
/// </summary>
public sealed partial class Master
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(100);
    /// <summary>A worker that served this long before dying counts as healthy: its slot's backoff starts over.</summary>
    private static readonly TimeSpan HealthyUptime = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan HeartbeatSlack = TimeSpan.FromSeconds(2);
    /// <summary>
    /// How long a retiring slot's worker goes on accepting after connections are steered away from its socket:
    /// handshakes begun before the steering still complete into its queue, one round trip later.
    /// </summary>
    private static readonly TimeSpan RetireDelay = TimeSpan.FromSeconds(1);

    /// <summary>Replaced by a reload (HUP), which reads the configuration again.</summary>
    private OspreyOptions _options;
    private readonly RunAs? _runAs;
    private readonly IReadOnlyList<string> _argv;
    private readonly IReadOnlyList<BindAddress> _binds;
    private string _name;
    private readonly BlockingCollection<Action> _events = new();
    private readonly Dictionary<int, WorkerHandle> _workers = [];
    /// <summary>Listening sockets shared by every worker (unix, fd://), in bind order; null where a bind is per-slot.</summary>
    private readonly Socket?[] _shared;
    /// <summary>Per slot, the SO_REUSEPORT sockets of the TCP binds (index = bind index; null for shared binds).</summary>
    private readonly Dictionary<int, Socket?[]> _slotSockets = [];
    private readonly Dictionary<int, SlotState> _slots = [];
    private readonly ReusePortSteering _steering;
    // --reuse-port as it was at start: it decides whether the port may be shared with other processes.
    private readonly bool _reusePort;
    private bool _sharedListening;
    private readonly Random _random = new();
    // What the interpreter said about itself (set before the first worker starts).
    private Python.PythonInstallation? _python;
    // Null when workers are osprey processes that embed libpython.
    private readonly InterpreterHost? _interpreterHost;
    /// <summary>What the variables of -e / raw_env were before the master set them (null: unset), for a reload to put back.</summary>
    private readonly Dictionary<string, string?> _environmentBefore = new(StringComparer.Ordinal);
    /// <summary>The configuration's text for its master hooks (null: it has none), and the process that runs them.</summary>
    private HookSource? _hookSource;
    private MasterHooks? _hooks;
    private Statsd? _statsd;
    private DateTime _nextWorkersGauge;
    private int _targetWorkers;
    private int _generation = 1;
    private bool _everReady;
    private bool _stopping;
    /// <summary>The stop under way is a quick one (INT, QUIT): one more INT or QUIT kills the workers at once.</summary>
    private bool _quickStop;
    private DateTime _stopDeadline;
    /// <summary>A stop closed the master's copies of the listening sockets (<see cref="StopListeningOnceWorkersStarted"/>).</summary>
    private bool _listenersClosed;
    private int _exitCode;
    private DateTime _nextMemoryCheck;

    private Master(OspreyOptions options, IReadOnlyList<string> argv, IReadOnlyList<BindAddress> binds, RunAs? runAs, HookSource? hooks)
    {
        _hookSource = hooks;
        _options = options;
        _runAs = runAs;
        _argv = argv;
        _binds = binds;
        _shared = new Socket?[binds.Count];
        _targetWorkers = options.Workers;
        _name = options.Name ?? options.App;
        _interpreterHost = InterpreterHost.Find();
        _reusePort = options.ReusePort;
        _steering = new ReusePortSteering(sharedWithOthers: options.ReusePort);
    }

    /// <param name="config">The configuration file's settings (already part of <paramref name="options"/>), to report.</param>
    public static int Run(OspreyOptions options, IReadOnlyList<string> argv, ConfigArguments? config = null)
    {
        (int upgradeParent, string? inheritedListeners) = ReadUpgradeVariables();
        // A master started by USR2 is already where its parent is (detached or not).
        if (options.Daemon && !Daemon.IsDetachedMaster && upgradeParent == 0)
        {
            return Daemon.Start(argv, options.EnableStdioInheritance, options.ErrorLog);
        }
        // Before anything is opened or bound: this may replace the process (see the method).
        string? signalWarning = Posix.ReexecIfControlSignalsIgnored(argv.Skip(1).ToArray());
        ClearUpgradeVariables();
        SystemdNotify.TakeSocket();
        Daemon.DetachMaster(options.EnableStdioInheritance);
        if (signalWarning is not null)
        {
            Console.Error.WriteLine($"osprey: warning: {signalWarning}");
        }
        try
        {
            Log.Configure(Server.ToSeverity(options.LogLevel), options.ErrorLog, options.AccessLog, options.CaptureOutput);
        }
        catch (IOException e)
        {
            // There is no log to write to: say it where the user is looking.
            Console.Error.WriteLine($"osprey: error: {e.Message}");
            return 1;
        }
        Log.Info($"Starting osprey {OspreyVersion.Release}");
        if (config is not null)
        {
            Log.Info($"Configuration read from {config.Path}");
            foreach (string warning in config.Warnings)
            {
                Log.Warning(warning);
            }
        }
        ReportCompatibilitySettings(options);

        // Checked here once, so a bad certificate is one line and exit 1, not a worker failure per slot.
        // Each worker loads the files again (a reload picks up a renewed certificate).
        if (CheckCertificate(options) is string certificateError)
        {
            Log.Error(certificateError);
            return 1;
        }

        // Resolved here so that a typo is one line at start; each worker resolves the names again.
        RunAs? runAs = RunAs.Resolve(options.User, options.Group, options.Initgroups, out string? runAsError);
        if (runAsError is not null)
        {
            Log.Error(runAsError);
            return 1;
        }
        if (runAs is not null)
        {
            Log.Info(runAs.SupplementaryOf is null
                ? $"Workers run as uid {runAs.UserId} gid {runAs.GroupId}"
                : $"Workers run as uid {runAs.UserId} gid {runAs.GroupId}, with the supplementary groups of {runAs.SupplementaryOf}");
            // Workers open the files before they switch, but reopen them (USR1) after.
            GiveLogFilesTo(runAs);
        }

        IReadOnlyList<BindAddress>? activated = SystemdSockets() ?? (upgradeParent != 0 ? ActivatedSocketsOfReplacedMaster(inheritedListeners) : null);
        var master = new Master(options, argv, activated ?? options.Binds, runAs, config?.MasterHooks) { _socketActivated = activated is not null };
        if (upgradeParent != 0)
        {
            master._upgradeParent = upgradeParent;
            master.ReadInheritedListeners(inheritedListeners);
            Log.Info($"Started by the USR2 of master {upgradeParent}, which it replaces");
        }
        return master.Serve();
    }

    /// <summary>gunicorn settings that are accepted but do nothing, or less than in gunicorn: said once at start and at each reload.</summary>
    private static void ReportCompatibilitySettings(OspreyOptions options)
    {
        if (options.Preload)
        {
            Log.Info("--preload has no effect: workers are started processes, not forks, so each imports the application itself");
        }
        if (WorkerClasses.Note(options.WorkerClass, options.Threads) is string note)
        {
            Log.Warning(note);
        }
        if (options.WorkerTmpDir is not null)
        {
            Log.Debug("--worker-tmp-dir has no effect: workers report to the master over a socket, not through heartbeat files");
        }
        if (options.CaptureOutput && options.ErrorLog == "-")
        {
            Log.Debug("--capture-output has no effect with --error-logfile - (stdout and stderr stay where they are)");
        }
        if (options.Initgroups && options.User is null)
        {
            Log.Warning("--initgroups has no effect without --user");
        }
    }

    /// <summary>Loads --certfile/--keyfile as a worker will; null when they are fine (or not given), else the error.</summary>
    private static string? CheckCertificate(OspreyOptions options)
    {
        if (options.CertFile is null)
        {
            return null;
        }
        try
        {
            using TlsCertificate tls = TlsCertificate.Load(options.CertFile, options.KeyFile, options.CaCerts, options.CertReqs);
            if (tls.ValidityWarning(DateTime.UtcNow) is string warning)
            {
                Log.Warning(warning);
            }
            return null;
        }
        catch (TlsCertificateException e)
        {
            return e.Message;
        }
    }

    /// <summary>systemd socket activation: LISTEN_FDS sockets from fd 3 on, when LISTEN_PID is this process (as gunicorn).</summary>
    private static IReadOnlyList<BindAddress>? SystemdSockets()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable("LISTEN_FDS"), NumberStyles.None, CultureInfo.InvariantCulture, out int count)
            || count <= 0
            || !int.TryParse(Environment.GetEnvironmentVariable("LISTEN_PID"), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
            || pid != Environment.ProcessId)
        {
            return null;
        }
        // Workers must not take these as meant for them.
        Posix.Unsetenv("LISTEN_FDS");
        Posix.Unsetenv("LISTEN_PID");
        Posix.Unsetenv("LISTEN_FDNAMES");
        var binds = new BindAddress[count];
        for (int i = 0; i < count; i++)
        {
            binds[i] = new BindAddress.FileDescriptor($"fd://{3 + i}", 3 + i);
        }
        return binds;
    }

    private int Serve()
    {
        // Before the pid file is written: another master's check below tells an osprey master by this name.
        Posix.SetProcessTitle("osprey-master", $"osprey: master [{_name}]");
        if (_options.PidFile is { } ownPidFile)
        {
            // As gunicorn: a second server must not take over the pid file of one that runs (and remove
            // it when it stops), or logrotate's USR1 and the init script's TERM reach the wrong one.
            string path = UpgradeParentAlive ? ownPidFile + ".2" : ownPidFile;
            if (RunningMasterNamedIn(path) is int running)
            {
                Log.Error($"Already running on PID {running} (pid file {path}); stop it first or give another --pid");
                return 1;
            }
        }
        try
        {
            BindShared();
            AdoptInheritedSlots();
            OpenSlot(0);
        }
        catch (ListenerException e)
        {
            Log.Error(e.Message);
            CloseAllSockets();
            return 1;
        }
        foreach (BindAddress bind in _binds)
        {
            Log.Info($"Listening at: {Listeners.Describe(bind, _options.Tls)} ({Environment.ProcessId})");
        }
        try
        {
            ApplyEnvironment(_options.Environment);
            _python = ProbePython(_options);
        }
        catch (Python.PythonStartupException e)
        {
            Log.Error(e.Message);
            CloseAllSockets();
            return 1;
        }
        if (_options.PidFile is { } pidFile)
        {
            // As gunicorn: PIDFILE.2 while the master this one replaces still has PIDFILE.
            string path = UpgradeParentAlive ? pidFile + ".2" : pidFile;
            if (WritePidFile(path) is string pidError)
            {
                Log.Error(pidError);
                CloseAllSockets();
                return 1;
            }
            _pidFileWritten = path;
        }
        Log.Info($"Using worker processes: {_targetWorkers}");
        _statsd = Statsd.Start(_options.StatsdHost, _options.StatsdPrefix, _options.DogstatsdTags);
        // Both before the first worker, as in gunicorn (whose on_starting comes before it binds). Its arbiter
        // sets its worker count first, from None, which calls nworkers_changed.
        StartHooks();
        _hooks?.Call("nworkers_changed", _targetWorkers, newWorkers: _targetWorkers, oldWorkers: null);
        _hooks?.Call("on_starting", _targetWorkers);
        _hooks?.Call("when_ready", _targetWorkers);

        var registrations = new List<PosixSignalRegistration>();
        // .NET's named values for the portable signals, raw numbers (accepted on Linux) for TTIN and TTOU.
        (PosixSignal Signal, int Number)[] handled =
        [
            (PosixSignal.SIGTERM, Posix.SIGTERM), (PosixSignal.SIGINT, 2), (PosixSignal.SIGQUIT, Posix.SIGQUIT),
            (PosixSignal.SIGHUP, Posix.SIGHUP), ((PosixSignal)Posix.SIGTTIN, Posix.SIGTTIN), ((PosixSignal)Posix.SIGTTOU, Posix.SIGTTOU),
            ((PosixSignal)Posix.SIGUSR1, Posix.SIGUSR1), ((PosixSignal)SIGUSR2, SIGUSR2), ((PosixSignal)SIGWINCH, SIGWINCH),
        ];
        foreach ((PosixSignal signal, int number) in handled)
        {
            registrations.Add(PosixSignalRegistration.Create(signal, context =>
            {
                context.Cancel = true;
                _events.Add(() => OnSignal(number));
            }));
        }

        try
        {
            Loop();
        }
        finally
        {
            foreach (PosixSignalRegistration registration in registrations)
            {
                registration.Dispose();
            }
            bool handedOver = UpgradeChildAlive;
            CloseListeners();
            if (!handedOver)
            {
                foreach (BindAddress bind in _binds)
                {
                    if (bind is BindAddress.Unix unix)
                    {
                        TryDelete(unix.Path);
                    }
                }
            }
            if (_pidFileWritten is { } pid && HoldsOwnPid(pid))
            {
                TryDelete(pid);
            }
            _hooks?.Stop(callOnExit: true, _targetWorkers, TimeSpan.FromSeconds(5));
            _statsd?.Dispose();
        }
        Log.Info("Shutting down: Master");
        return _exitCode;
    }

    /// <summary>This executable again, with the arguments after <paramref name="argv"/>[0] (workers, a daemon's master, a USR2 master).</summary>
    internal static ProcessStartInfo StartInfoOfThisExecutable(IReadOnlyList<string> argv)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath ?? throw new IOException("cannot find the osprey executable"))
        {
            UseShellExecute = false,
        };
        for (int i = 1; i < argv.Count; i++)
        {
            start.ArgumentList.Add(argv[i]);
        }
        return start;
    }

    /// <summary>Whether the pid file still names this process (a promoted new master may have taken it over).</summary>
    private static bool HoldsOwnPid(string path)
    {
        try
        {
            return File.ReadAllText(path).Trim() == Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// The pid in <paramref name="path"/> when it is another live osprey master (its command name, which
    /// <see cref="Serve"/> sets before it writes a pid file); null when there is no such file, or it is stale:
    /// a process gone, a zombie, or a pid the kernel has since given to something else.
    /// </summary>
    private static int? RunningMasterNamedIn(string path)
    {
        try
        {
            if (!int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                || pid <= 0 || pid == Environment.ProcessId)
            {
                return null;
            }
            // "PID (COMMAND) STATE ...": the command may hold spaces and parentheses, so the last ')' ends it.
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int open = stat.IndexOf('(', StringComparison.Ordinal);
            int close = stat.LastIndexOf(')');
            bool master = open >= 0 && close > open && stat[(open + 1)..close] == "osprey-master";
            bool zombie = close >= 0 && stat.Length > close + 2 && stat[close + 2] is 'Z' or 'X';
            return master && !zombie ? pid : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Writes this process's id to <paramref name="path"/>; null, or the line saying why it could not.</summary>
    private static string? WritePidFile(string path)
    {
        try
        {
            File.WriteAllText(path, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"--pid: cannot write {path}: {e.Message}";
        }
    }

    private void StartHooks()
    {
        _hooks = null;
        if (_hookSource is null)
        {
            return;
        }
        try
        {
            _hooks = MasterHooks.Start(_hookSource,
                Python.PythonInstallation.ChooseInterpreter(_options.Python), Server.ToSeverity(_options.LogLevel), _name, _targetWorkers);
        }
        catch (Python.PythonStartupException e)
        {
            Log.Error($"the configuration's master hooks are not run: {e.Message}");
        }
    }

    /// <summary>
    /// Runs the interpreter to ask where it lives (this loads no Python here), with the environment and
    /// directory a worker has. The answer goes to every worker: it saves each an interpreter start, which
    /// is most of the time a replacement takes to serve.
    /// </summary>
    /// <exception cref="Python.PythonStartupException">The interpreter cannot be used.</exception>
    private Python.PythonInstallation ProbePython(OspreyOptions options)
    {
        Python.PythonInstallation python = Python.PythonInstallation.Discover(
            Python.PythonInstallation.ChooseInterpreter(options.Python), options.Chdir);
        Log.Info(_interpreterHost is not null
            ? $"Using Python {python.Version} at {python.Executable} (workers run inside it)"
            : $"Using Python {python.Version} at {python.Executable} ({python.SharedLibrary})");
        return python;
    }

    /// <summary>Sets -e / raw_env in the master's environment, which the probe and the workers inherit.</summary>
    private void ApplyEnvironment(IReadOnlyList<KeyValuePair<string, string>> variables)
    {
        foreach ((string name, string value) in variables)
        {
            if (!_environmentBefore.ContainsKey(name))
            {
                _environmentBefore[name] = Environment.GetEnvironmentVariable(name);
            }
            Python.PythonRuntime.SetEnvironmentVariable(name, value);
        }
    }

    /// <summary>Puts the variables <see cref="ApplyEnvironment"/> set back as they were, as gunicorn does before a reload reads its settings.</summary>
    private void RestoreEnvironment()
    {
        foreach ((string name, string? value) in _environmentBefore)
        {
            if (value is null)
            {
                Posix.Unsetenv(name);
            }
            else
            {
                Python.PythonRuntime.SetEnvironmentVariable(name, value);
            }
        }
        _environmentBefore.Clear();
    }

    private void Loop()
    {
        // The first workers start now, not a tick from now: start-up waits on them.
        SpawnMissing();
        while (true)
        {
            if (_events.TryTake(out Action? handle, Tick))
            {
                handle();
                while (_events.TryTake(out handle))
                {
                    handle();
                }
            }
            if (_stopping)
            {
                StopListeningOnceWorkersStarted();
                if (_workers.Count == 0)
                {
                    return;
                }
                if (DateTime.UtcNow > _stopDeadline)
                {
                    foreach (WorkerHandle worker in _workers.Values)
                    {
                        if (!worker.KillSent)
                        {
                            Log.Warning($"Worker (pid:{worker.Pid}) did not finish within --graceful-timeout; killing it");
                            worker.Kill();
                        }
                    }
                }
                continue;
            }
            CheckPromotion();
            CheckTimeouts();
            CheckMemory();
            SpawnMissing();
            DrainReplaced();
            RetireSlots();
            if (_statsd is not null && DateTime.UtcNow >= _nextWorkersGauge)
            {
                // As gunicorn's arbiter, about once a second.
                _nextWorkersGauge = DateTime.UtcNow.AddSeconds(1);
                _statsd.Gauge("gunicorn.workers"u8, _workers.Count);
            }
        }
    }

    // ------------------------------------------------------------------ signals

    private void OnSignal(int signal)
    {
        string name = signal switch
        {
            15 => "term", 2 => "int", 3 => "quit", 1 => "hup", 21 => "ttin", 22 => "ttou", 10 => "usr1", SIGUSR2 => "usr2",
            SIGWINCH => "winch",
            _ => signal.ToString(CultureInfo.InvariantCulture),
        };
        Log.Info($"Handling signal: {name}");
        if (_stopping)
        {
            // INT or QUIT during a graceful stop makes it quick; again during a quick one (Ctrl-C twice), immediate.
            if (signal is 2 or 3)
            {
                Stop(_quickStop ? StopMode.Kill : StopMode.Quick);
            }
            return;
        }
        switch (signal)
        {
            case 15:
                Stop(StopMode.Graceful);
                break;
            case 2 or 3:
                Stop(StopMode.Quick);
                break;
            case 1:
                Reload();
                break;
            case Posix.SIGUSR1:
                ReopenLogs();
                break;
            case SIGUSR2:
                StartUpgrade();
                break;
            case SIGWINCH:
                StopWorkersKeepingMaster();
                break;
            case 21:
                SetTargetWorkers(_targetWorkers + 1);
                Log.Info($"Increasing workers to {_targetWorkers}");
                _hooks?.Call("nworkers_changed", _targetWorkers, newWorkers: _targetWorkers, oldWorkers: _targetWorkers - 1);
                break;
            case 22:
                if (_targetWorkers <= 1)
                {
                    Log.Info("TTOU ignored: at least one worker stays");
                    break;
                }
                // The retired slot's worker is stopped by RetireSlots, once no new connection can reach it.
                SetTargetWorkers(_targetWorkers - 1);
                Log.Info($"Decreasing workers to {_targetWorkers}");
                _hooks?.Call("nworkers_changed", _targetWorkers, newWorkers: _targetWorkers, oldWorkers: _targetWorkers + 1);
                break;
        }
    }

    /// <summary>
    /// USR1, as gunicorn: the master opens its log files again by name, then tells every worker
    /// to do the same (logrotate's postrotate). Files the master creates go to --user first, so
    /// the workers can open them too.
    /// </summary>
    private void ReopenLogs()
    {
        List<string> problems = Log.Reopen();
        foreach (string problem in problems)
        {
            Log.Warning(problem);
        }
        if (problems.Count == 0)
        {
            Log.Info("Log files reopened");
        }
        GiveLogFilesTo(_runAs);
        foreach (WorkerHandle worker in _workers.Values)
        {
            if (!worker.KillSent)
            {
                Posix.Kill(worker.Pid, Posix.SIGUSR1);
            }
        }
    }

    private static void GiveLogFilesTo(RunAs? runAs)
    {
        if (runAs is null)
        {
            return;
        }
        foreach (string file in Log.Files)
        {
            if (runAs.Own(file) is string problem)
            {
                Log.Warning(problem);
            }
        }
    }

    private enum StopMode
    {
        /// <summary>TERM: workers stop accepting and finish what is in flight within --graceful-timeout.</summary>
        Graceful,
        /// <summary>
        /// INT, QUIT (gunicorn's quick shutdown): workers get QUIT and exit at once, after only the
        /// configuration's worker_int and worker_exit hooks, which --graceful-timeout bounds.
        /// </summary>
        Quick,
        /// <summary>SIGKILL now: a start that failed, or a second INT or QUIT.</summary>
        Kill,
    }

    private void Stop(StopMode mode)
    {
        // Not for a master that handed its sockets to a new one: the service goes on.
        if (!UpgradeChildAlive && !_stopping)
        {
            SystemdNotify.Send("STOPPING=1");
        }
        TimeSpan grace = mode switch
        {
            StopMode.Graceful => TimeSpan.FromSeconds(_options.GracefulTimeout),
            // The worker's own bound on its hooks, and a little more for it to exit.
            StopMode.Quick => TimeSpan.FromSeconds(Math.Max(1, _options.GracefulTimeout) + 2),
            _ => TimeSpan.Zero,
        };
        DateTime deadline = DateTime.UtcNow + grace;
        // Making a stop quicker never moves its deadline later.
        _stopDeadline = _stopping && _stopDeadline < deadline ? _stopDeadline : deadline;
        _stopping = true;
        _quickStop = mode != StopMode.Graceful;
        foreach (WorkerHandle worker in _workers.Values)
        {
            switch (mode)
            {
                case StopMode.Graceful:
                    worker.Terminate();
                    break;
                // A worker still starting has no hooks to run and may not handle QUIT yet (its default dumps core).
                case StopMode.Quick when worker.Ready:
                    worker.Quit();
                    break;
                default:
                    worker.Kill();
                    break;
            }
        }
    }

    /// <summary>
    /// HUP: a new generation of workers starts next to the old one; each old worker is drained only when every
    /// slot has a ready worker of the new generation, so no request meets a slot without a worker. If the new
    /// generation cannot load the application, the old workers are kept.
    /// </summary>
    private void Reload()
    {
        if (!RereadConfiguration())
        {
            return;
        }
        _hooks?.Call("on_reload", _targetWorkers);
        _generation++;
        Log.Info($"Hang up: Master (starting generation {_generation})");
        foreach (WorkerHandle worker in _workers.Values)
        {
            if (!worker.Draining)
            {
                worker.Replaced = true;
            }
        }
    }

    /// <summary>
    /// HUP takes the configuration again, as gunicorn does: the command line and GUNICORN_CMD_ARGS as at
    /// start, and the configuration file run afresh (or ./gunicorn.conf.py, if it is there now), so that
    /// the new generation of workers starts with the new settings. Only the listening addresses and the
    /// workers' identity need a restart. A file that fails, a bad setting, a change to those, or a
    /// certificate, interpreter or log file that cannot be used cancels the reload with one error line:
    /// the workers and the settings stay as they were (gunicorn's master would exit instead).
    /// </summary>
    private bool RereadConfiguration()
    {
        OspreyOptions previous = _options;
        RestoreEnvironment();
        ParseOutcome outcome = ConfigFile.ReadOptions(_argv.Skip(1).ToArray(), out ConfigArguments? config, out string? configOutput);
        OspreyOptions? options = (outcome as ParseOutcome.Run)?.Options;
        string? problem = outcome switch
        {
            ParseOutcome.Run => RestartOnlyChange(previous, options!) ?? CheckCertificate(options!),
            ParseOutcome.Error error => error.Message,
            _ => "the command line asks for help or the version",
        };
        Python.PythonInstallation? python = _python;
        if (problem is null)
        {
            try
            {
                ApplyEnvironment(options!.Environment);
                python = ProbePython(options);
            }
            catch (Python.PythonStartupException e)
            {
                problem = e.Message;
            }
        }
        if (problem is null && (options!.ErrorLog != previous.ErrorLog || options.AccessLog != previous.AccessLog || options.LogLevel != previous.LogLevel
            || options.CaptureOutput != previous.CaptureOutput))
        {
            try
            {
                Log.Configure(Server.ToSeverity(options.LogLevel), options.ErrorLog, options.AccessLog, options.CaptureOutput);
                GiveLogFilesTo(_runAs);
            }
            catch (IOException e)
            {
                problem = e.Message;
            }
        }
        if (problem is not null)
        {
            if (configOutput is { Length: > 0 })
            {
                Log.Error(configOutput);
            }
            Log.Error($"Reload cancelled, the workers and settings stay as they were: {problem}");
            RestoreEnvironment();
            ApplyEnvironment(previous.Environment);
            return false;
        }

        _options = options!;
        _python = python;
        if (configOutput is { Length: > 0 })
        {
            // What the file printed, verbatim as the application's output is.
            Log.Raw(Encoding.UTF8.GetBytes(configOutput + "\n"));
        }
        if (config is not null)
        {
            Log.Info($"Configuration read from {config.Path}");
            foreach (string warning in config.Warnings)
            {
                Log.Warning(warning);
            }
        }
        ReportCompatibilitySettings(_options);
        ConfigFile.HandToWorkers(config);
        int previousWorkers = _targetWorkers;
        // As gunicorn: the configured count, whatever TTIN and TTOU made of the previous one.
        SetTargetWorkers(_options.Workers);
        _name = _options.Name ?? _options.App;
        if (_options.StatsdHost != previous.StatsdHost || _options.StatsdPrefix != previous.StatsdPrefix
            || _options.DogstatsdTags != previous.DogstatsdTags)
        {
            _statsd?.Dispose();
            _statsd = Statsd.Start(_options.StatsdHost, _options.StatsdPrefix, _options.DogstatsdTags);
        }
        if (config?.MasterHooks != _hookSource)
        {
            _hooks?.Stop(callOnExit: false, previousWorkers, TimeSpan.FromSeconds(5));
            _hookSource = config?.MasterHooks;
            StartHooks();
        }
        if (_targetWorkers != previousWorkers)
        {
            Log.Info($"Using worker processes: {_targetWorkers}");
        }
        // Changed or not: gunicorn's reload sets the arbiter's worker count again, which calls the hook.
        _hooks?.Call("nworkers_changed", _targetWorkers, newWorkers: _targetWorkers, oldWorkers: previousWorkers);
        Posix.SetProcessTitle("osprey-master", $"osprey: master [{_name}]");
        if (_options.PidFile != previous.PidFile)
        {
            if (_pidFileWritten is { } oldPidFile)
            {
                TryDelete(oldPidFile);
                _pidFileWritten = null;
            }
            string? path = _options.PidFile is { } pidFile && UpgradeParentAlive ? pidFile + ".2" : _options.PidFile;
            if (path is not null)
            {
                if (WritePidFile(path) is string pidError)
                {
                    Log.Warning(pidError);
                }
                else
                {
                    _pidFileWritten = path;
                }
            }
        }
        return true;
    }

    /// <summary>The settings a reload cannot change, since the master holds them for its whole life; null when none changed.</summary>
    private static string? RestartOnlyChange(OspreyOptions previous, OspreyOptions next)
    {
        if (!previous.Binds.Select(b => b.Original).SequenceEqual(next.Binds.Select(b => b.Original)))
        {
            return $"bind changed ({Describe(previous.Binds)} -> {Describe(next.Binds)}); the listening addresses change only with a restart";
        }
        if (previous.User != next.User || previous.Group != next.Group || previous.Initgroups != next.Initgroups)
        {
            return "user or group changed; the workers' identity changes only with a restart";
        }
        if (previous.Daemon != next.Daemon || (next.Daemon && previous.EnableStdioInheritance != next.EnableStdioInheritance))
        {
            return "daemon or enable_stdio_inheritance changed; that takes a restart";
        }
        return null;

        static string Describe(IReadOnlyList<BindAddress> binds) => string.Join(", ", binds.Select(b => b.Original));
    }

    // ------------------------------------------------------------------ supervision

    private void SpawnMissing()
    {
        DateTime now = DateTime.UtcNow;
        for (int slot = 0; slot < _targetWorkers; slot++)
        {
            bool covered = false;
            foreach (WorkerHandle worker in _workers.Values)
            {
                if (worker.Slot == slot && !worker.Replaced && !worker.Draining)
                {
                    covered = true;
                    break;
                }
            }
            if (covered)
            {
                continue;
            }
            SlotState state = Slot(slot);
            if (now < state.NextSpawn)
            {
                continue;
            }
            try
            {
                OpenSlot(slot);
                Spawn(slot);
            }
            catch (Exception e) when (e is ListenerException or IOException or System.ComponentModel.Win32Exception)
            {
                Log.Error($"cannot start a worker for slot {slot}: {e.Message}");
                state.Failures++;
                state.NextSpawn = now + Backoff(state.Failures);
            }
        }
        // Slots above the target (after TTOU) give their sockets back once nobody serves them. Not with no
        // workers at all (WINCH): as gunicorn's master, this one keeps listening, so that the port stays
        // Osprey's and the connections made meanwhile wait in the backlog for the workers a HUP starts.
        foreach (int slot in _slotSockets.Keys.ToArray())
        {
            // Not while the master this one replaces lives: it holds the same sockets, so they would not
            // leave their groups, and steering would lose count of them.
            if (slot >= _targetWorkers && _targetWorkers > 0 && !_workers.Values.Any(w => w.Slot == slot) && !UpgradeParentAlive)
            {
                CloseSlot(slot);
            }
        }
    }

    /// <summary>Replaced workers (recycle, reload) get TERM once every slot has a ready worker that is not being replaced.</summary>
    private void DrainReplaced()
    {
        bool anyReplaced = false;
        foreach (WorkerHandle worker in _workers.Values)
        {
            anyReplaced |= worker.Replaced && !worker.Draining;
        }
        if (!anyReplaced)
        {
            return;
        }
        for (int slot = 0; slot < _targetWorkers; slot++)
        {
            if (!_workers.Values.Any(w => w.Slot == slot && w.Ready && !w.Replaced && !w.Draining))
            {
                return;
            }
        }
        foreach (WorkerHandle worker in _workers.Values)
        {
            // A retiring slot's worker is RetireSlots' to stop.
            if (worker.Replaced && !worker.Draining && worker.Slot < _targetWorkers)
            {
                Log.Info($"Stopping replaced worker (pid:{worker.Pid}, slot {worker.Slot}, generation {worker.Generation}): {worker.ReplaceReason ?? "reload"}");
                worker.Terminate();
            }
        }
    }

    /// <summary>
    /// TTIN, TTOU and a reload change the number of slots. Slots from the new count up retire: connections are
    /// steered away from their sockets at once, and their workers stop a little later (<see cref="RetireSlots"/>).
    /// </summary>
    private void SetTargetWorkers(int count)
    {
        _targetWorkers = count;
        DateTime now = DateTime.UtcNow;
        foreach (int slot in _slotSockets.Keys)
        {
            SlotState state = Slot(slot);
            state.RetiredAt = slot >= count ? state.RetiredAt ?? now : null;
        }
        UpdateSteering();
    }

    private void UpdateSteering()
    {
        if (_steering.Steer(slot => slot < _targetWorkers, slot => _slotSockets[slot]) is string error)
        {
            Log.Warning(error);
        }
    }

    /// <summary>Workers of retired slots get TERM once connections have been steered away from their sockets long enough.</summary>
    private void RetireSlots()
    {
        DateTime now = DateTime.UtcNow;
        foreach (WorkerHandle worker in _workers.Values)
        {
            if (worker.Slot < _targetWorkers || worker.Draining || worker.KillSent)
            {
                continue;
            }
            DateTime? retiredAt = Slot(worker.Slot).RetiredAt;
            if (!_steering.Available || retiredAt is null || now - retiredAt >= RetireDelay)
            {
                Log.Info($"Stopping worker (pid:{worker.Pid}, slot {worker.Slot}): the workers are now {_targetWorkers}");
                worker.Terminate();
            }
        }
    }

    /// <summary>
    /// A worker that has loaded its application asks for its sockets to listen. The master makes the listen()
    /// calls, so that it knows in which order the slots joined their SO_REUSEPORT groups (see
    /// <see cref="ReusePortSteering"/>); until then the slot takes no share of the connections.
    /// </summary>
    private void ListenFor(WorkerHandle worker)
    {
        try
        {
            if (!_steering.IsListening(worker.Slot) && _slotSockets.TryGetValue(worker.Slot, out Socket?[]? sockets))
            {
                foreach (Socket? socket in sockets) socket?.Listen(_options.Backlog);
                _steering.Joined(worker.Slot);
                UpdateSteering();
            }
            if (!_sharedListening && !_listenersClosed)
            {
                foreach (Socket? socket in _shared) socket?.Listen(_options.Backlog);
                _sharedListening = true;
            }
        }
        catch (SocketException e)
        {
            Log.Error($"cannot listen for slot {worker.Slot}: {e.Message}");
        }
        try
        {
            worker.Channel.Send("listening\n"u8);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The worker is gone already; its exit is handled on its own.
        }
    }

    private void CheckTimeouts()
    {
        if (_options.Timeout <= 0)
        {
            return;
        }
        DateTime now = DateTime.UtcNow;
        // A little past --timeout: a request stuck in C code with the GIL also stops the heartbeats, and the
        // worker's own watchdog, which fires --timeout after the request started (a heartbeat interval or so
        // after the last beat), must first answer 504 and dump the Python stacks; then the master kills.
        var limit = TimeSpan.FromSeconds(_options.Timeout) + HeartbeatSlack;
        foreach (WorkerHandle worker in _workers.Values)
        {
            // Heartbeats start once the application is loaded and go on while the worker drains.
            if (worker.Ready && !worker.KillSent && now - worker.LastHeartbeat > limit)
            {
                Log.Critical($"WORKER TIMEOUT (pid:{worker.Pid}): no heartbeat for {(now - worker.LastHeartbeat).TotalSeconds:0.0} s (--timeout {_options.Timeout}); killing it");
                worker.Kill();
            }
            if (worker.Draining && !worker.KillSent && now > worker.DrainDeadline)
            {
                Log.Warning($"Worker (pid:{worker.Pid}) did not finish within --graceful-timeout; killing it");
                worker.Kill();
            }
        }
    }

    private void CheckMemory()
    {
        if (_options.MaxWorkerMemory <= 0 || DateTime.UtcNow < _nextMemoryCheck)
        {
            return;
        }
        _nextMemoryCheck = DateTime.UtcNow + TimeSpan.FromMilliseconds(500);
        long limit = _options.MaxWorkerMemory * 1024L * 1024L;
        foreach (WorkerHandle worker in _workers.Values)
        {
            if (worker.Ready && !worker.Replaced && !worker.Draining && Posix.ResidentBytes(worker.Pid) is long rss && rss > limit)
            {
                Replace(worker, $"resident memory {rss / (1024 * 1024)} MB exceeds --max-worker-memory {_options.MaxWorkerMemory}");
            }
        }
    }

    private void Replace(WorkerHandle worker, string reason)
    {
        if (worker.Draining)
        {
            return;
        }
        if (worker.Replaced)
        {
            // A request while the replacement starts (under --reload, a second code change) is kept: should
            // that replacement fail to load the application (it may have imported what the first change
            // broke), this worker is replaced again for the newer change instead of serving on.
            worker.ReplaceAgain = reason;
            return;
        }
        Log.Info($"Recycling worker (pid:{worker.Pid}, slot {worker.Slot}): {reason}");
        worker.Replaced = true;
        worker.ReplaceReason = reason;
    }

    private static TimeSpan Backoff(int failures) =>
        failures <= 1 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Min(250 * Math.Pow(2, failures - 2), MaxBackoff.TotalMilliseconds));

    private SlotState Slot(int slot)
    {
        if (!_slots.TryGetValue(slot, out SlotState? state))
        {
            state = new SlotState();
            _slots[slot] = state;
        }
        return state;
    }

    // ------------------------------------------------------------------ worker events (main thread)

    private void OnMessage(WorkerHandle worker, string line)
    {
        worker.LastHeartbeat = DateTime.UtcNow;
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        string verb = space < 0 ? line : line[..space];
        string rest = space < 0 ? "" : line[(space + 1)..];
        switch (verb)
        {
            case "listen":
                ListenFor(worker);
                break;
            case "ready":
                worker.Ready = true;
                worker.ReadyAt = DateTime.UtcNow;
                if (!_everReady)
                {
                    Daemon.ReportReady();
                    // MAINPID also covers --daemon (systemd started the command, not this process); a master
                    // started by USR2 claims it only once the one it replaces is gone.
                    SystemdNotify.Send(UpgradeParentAlive
                        ? $"READY=1\nSTATUS=osprey master [{_name}] serving beside the master it replaces"
                        : $"READY=1\nSTATUS=osprey master [{_name}] serving\nMAINPID={Environment.ProcessId}");
                }
                _everReady = true;
                Log.Debug($"Worker ready (pid:{worker.Pid}, slot {worker.Slot}, generation {worker.Generation})");
                if (_stopping)
                {
                    if (_quickStop) worker.Quit();
                    else worker.Terminate();
                }
                break;
            case "hb":
            case "exiting":
                if (long.TryParse(rest, NumberStyles.None, CultureInfo.InvariantCulture, out long requests))
                {
                    worker.Requests = requests;
                }
                worker.ReportedExit |= verb == "exiting";
                break;
            case "recycle":
                if (!_stopping)
                {
                    Replace(worker, rest);
                }
                break;
            case "failed":
            {
                int cut = rest.IndexOf(' ', StringComparison.Ordinal);
                if (cut > 0 && int.TryParse(rest[..cut], NumberStyles.None, CultureInfo.InvariantCulture, out int code))
                {
                    worker.FailureCode = code;
                    try
                    {
                        worker.FailureText = Encoding.UTF8.GetString(Convert.FromBase64String(rest[(cut + 1)..]));
                    }
                    catch (FormatException)
                    {
                        worker.FailureText = "the worker failed to start";
                    }
                }
                break;
            }
        }
    }

    private void OnExited(WorkerHandle worker)
    {
        if (!_workers.Remove(worker.Pid))
        {
            return;
        }
        _hooks?.Call("child_exit", _targetWorkers, pid: worker.Pid, age: worker.Generation);
        int exitCode = worker.ExitCode();
        worker.Process.Dispose();
        string how = exitCode > 128 && exitCode < 128 + 65 ? $"was killed by signal {exitCode - 128}" : $"exited with code {exitCode}";
        // A worker that said it was exiting stopped on a signal of its own (TERM, INT, QUIT sent to it, not to
        // the master): replaced at once, like a recycled one, not counted as a crash.
        bool expected = worker.Draining || worker.KillSent || worker.ReportedExit || _stopping;

        if (!worker.Ready)
        {
            OnBootFailure(worker, exitCode, how);
            return;
        }

        string summary = $"Worker (pid:{worker.Pid}, slot {worker.Slot}, generation {worker.Generation}) {how}; it served {worker.Requests} requests";
        if (expected)
        {
            Log.Info(summary);
        }
        else
        {
            Log.Error(summary + (exitCode == 128 + 9 ? " (killed: perhaps out of memory?)" : ""));
            SlotState state = Slot(worker.Slot);
            state.Failures = DateTime.UtcNow - worker.ReadyAt > HealthyUptime ? 1 : state.Failures + 1;
            state.NextSpawn = DateTime.UtcNow + Backoff(state.Failures);
        }
    }

    private void OnBootFailure(WorkerHandle worker, int exitCode, string how)
    {
        if (_stopping || worker.KillSent)
        {
            return;
        }
        if (!_everReady)
        {
            // The first generation cannot load the application: say why once and stop, as gunicorn's
            // "App failed to load", rather than respawning forever.
            WriteFailure(worker);
            _exitCode = worker.FailureCode ?? (exitCode == 0 ? 1 : exitCode);
            Stop(StopMode.Kill);
            return;
        }
        bool oldKept = false;
        bool newGeneration = false;
        foreach (WorkerHandle other in _workers.Values)
        {
            // The replacement could not load the application: the worker(s) it was to replace keep serving.
            if (other.Replaced && !other.Draining && (other.Slot == worker.Slot || worker.Generation > other.Generation))
            {
                other.Replaced = false;
                other.ReplaceReason = null;
                oldKept = true;
                newGeneration |= worker.Generation > other.Generation;
            }
        }
        WriteFailure(worker);
        if (oldKept)
        {
            Log.Error($"New worker (pid:{worker.Pid}, generation {worker.Generation}) {how} before loading the application; the old workers keep serving");
            // A reload's new generation: stop what else it started (booting or already ready), so that the
            // old generation covers every slot again and one generation serves, not a mix. A recycle's
            // replacement is of the serving generation itself, which stays as it is.
            if (newGeneration)
            {
                foreach (WorkerHandle other in _workers.Values)
                {
                    if (other.Generation == worker.Generation)
                    {
                        if (other.Ready) other.Terminate();
                        else other.Kill();
                    }
                }
                _generation = Math.Max(1, _workers.Values.Where(w => !w.KillSent).Select(w => w.Generation).DefaultIfEmpty(1).Max());
            }
            // A recycle that keeps asking (memory over the limit) must not start a failing replacement in a loop.
            SlotState kept = Slot(worker.Slot);
            kept.Failures++;
            kept.NextSpawn = DateTime.UtcNow + Backoff(Math.Max(2, kept.Failures));
            foreach (WorkerHandle other in _workers.Values)
            {
                if (other.ReplaceAgain is string again && !other.Replaced)
                {
                    other.ReplaceAgain = null;
                    Replace(other, again);
                }
            }
            return;
        }
        Log.Error($"Worker (pid:{worker.Pid}, slot {worker.Slot}) {how} before loading the application");
        SlotState state = Slot(worker.Slot);
        state.Failures++;
        state.NextSpawn = DateTime.UtcNow + Backoff(Math.Max(2, state.Failures));
    }

    private static void WriteFailure(WorkerHandle worker)
    {
        if (worker.FailureText is not { } text)
        {
            return;
        }
        // The text is a Python traceback (verbatim, as the application's output) and then the one error line.
        int lastLine = text.LastIndexOf('\n');
        if (lastLine >= 0)
        {
            Log.Raw(Encoding.UTF8.GetBytes(text[..(lastLine + 1)]));
        }
        Log.Error(text[(lastLine + 1)..]);
    }

    // ------------------------------------------------------------------ processes

    private void Spawn(int slot)
    {
        (int masterEnd, int workerEnd) = Posix.SocketPair();
        var channel = new Socket(new SafeSocketHandle(masterEnd, ownsHandle: true));
        var inherited = new List<int>();
        var listenerFds = new List<int>();
        Socket?[] slotSockets = _slotSockets[slot];
        for (int i = 0; i < _binds.Count; i++)
        {
            Socket socket = slotSockets[i] ?? _shared[i]!;
            listenerFds.Add((int)socket.Handle);
        }
        inherited.AddRange(listenerFds);
        inherited.Add(workerEnd);

        // In long: any two int options may be given, and their sum need not fit an int.
        int maxRequests = _options.MaxRequests <= 0 ? 0
            : (int)Math.Min(int.MaxValue, _options.MaxRequests + _random.NextInt64(0, (long)_options.MaxRequestsJitter + 1));
        Python.PythonInstallation python = _python ?? throw new InvalidOperationException("a worker is started before the interpreter was probed");
        var context = new WorkerContext(workerEnd, listenerFds, slot, _generation, maxRequests, Environment.ProcessId, python.ToProbeText(),
            InInterpreter: _interpreterHost is not null);
        ProcessStartInfo start;
        if (_interpreterHost is not null)
        {
            start = _interpreterHost.StartInfo(python.Executable, _argv.Skip(1).ToArray());
        }
        else
        {
            start = StartInfoOfThisExecutable(_argv);
        }
        start.Environment[WorkerContext.EnvironmentVariable] = context.Encode();

        _hooks?.Call("pre_fork", _targetWorkers, age: _generation);
        Process process;
        foreach (int fd in inherited) Posix.SetInheritable(fd, true);
        try
        {
            process = Process.Start(start) ?? throw new IOException("the worker process did not start");
        }
        finally
        {
            foreach (int fd in listenerFds) Posix.SetInheritable(fd, false);
            Posix.SetInheritable(workerEnd, false);
            // Only the worker holds its end now: its exit closes it and the master's reader sees EOF.
            Posix.Close(workerEnd);
        }

        var worker = new WorkerHandle(process, slot, _generation, channel, TimeSpan.FromSeconds(_options.GracefulTimeout));
        _workers[worker.Pid] = worker;
        Log.Debug($"Started worker (pid:{worker.Pid}, slot {slot}, generation {_generation})");

        // The worker is gone once both its process has exited and its channel is read to the end, so that a
        // "failed" message always arrives before the exit is handled.
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => _events.Add(() => { worker.Exited = true; MaybeGone(worker); });
        if (process.HasExited)
        {
            _events.Add(() => { worker.Exited = true; MaybeGone(worker); });
        }
        new Thread(() => ReadChannel(worker)) { IsBackground = true, Name = $"osprey-channel-{worker.Pid}" }.Start();
    }

    private void ReadChannel(WorkerHandle worker)
    {
        var buffer = new byte[4096];
        var line = new List<byte>();
        try
        {
            while (true)
            {
                int n = worker.Channel.Receive(buffer);
                if (n <= 0)
                {
                    break;
                }
                for (int i = 0; i < n; i++)
                {
                    if (buffer[i] == (byte)'\n')
                    {
                        string text = Encoding.UTF8.GetString(line.ToArray());
                        line.Clear();
                        _events.Add(() => OnMessage(worker, text));
                    }
                    else
                    {
                        line.Add(buffer[i]);
                    }
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        worker.Channel.Dispose();
        _events.Add(() => { worker.ChannelClosed = true; MaybeGone(worker); });
    }

    private void MaybeGone(WorkerHandle worker)
    {
        if (worker.Exited && worker.ChannelClosed)
        {
            OnExited(worker);
        }
    }

    // ------------------------------------------------------------------ sockets

    private void BindShared()
    {
        for (int i = 0; i < _binds.Count; i++)
        {
            if (_binds[i] is BindAddress.Tcp)
            {
                continue;
            }
            if (TakeInheritedShared(_binds[i]) is { } inherited)
            {
                _shared[i] = inherited;
                continue;
            }
            uint previous = 0;
            bool unix = _binds[i] is BindAddress.Unix;
            if (unix)
            {
                previous = Posix.Umask((uint)_options.Umask);
            }
            try
            {
                _shared[i] = Listeners.BindOne(_binds[i], _options.Backlog, reusePort: false, listen: false);
                if (unix && _runAs?.Own(((BindAddress.Unix)_binds[i]).Path) is string error)
                {
                    throw new ListenerException(error);
                }
            }
            finally
            {
                if (unix)
                {
                    Posix.Umask(previous);
                }
            }
        }
    }

    /// <summary>The slot's SO_REUSEPORT sockets, bound on first use (slot 0 at start-up, where a port in use is the error).</summary>
    private void OpenSlot(int slot)
    {
        if (_slotSockets.ContainsKey(slot))
        {
            return;
        }
        var sockets = new Socket?[_binds.Count];
        try
        {
            for (int i = 0; i < _binds.Count; i++)
            {
                if (_binds[i] is BindAddress.Tcp tcp)
                {
                    // Port 0 means "any": every later slot must join the group of the port slot 0 got.
                    if (tcp.Port == 0 && slot != 0 && _slotSockets[0][i]?.LocalEndPoint is IPEndPoint bound)
                    {
                        tcp = tcp with { Port = bound.Port };
                    }
                    sockets[i] = Listeners.BindOne(tcp, _options.Backlog, reusePort: true, listen: false, probeInUse: slot == 0 && !_reusePort);
                }
            }
        }
        catch
        {
            foreach (Socket? socket in sockets) socket?.Dispose();
            throw;
        }
        _slotSockets[slot] = sockets;
    }

    private void CloseSlot(int slot)
    {
        if (_slotSockets.Remove(slot, out Socket?[]? sockets))
        {
            foreach (Socket? socket in sockets) socket?.Dispose();
            _steering.Left(slot);
            _slots.Remove(slot);
            if (!_stopping)
            {
                UpdateSteering();
            }
        }
    }

    /// <summary>
    /// On a stop, the master's copies of the listening sockets close as soon as no worker still needs them
    /// to start serving, as gunicorn's arbiter closes its listeners when it stops. Once the draining workers
    /// have closed theirs too, a client that connects is refused at once, and a load balancer tries another
    /// server, instead of waiting until the drain ends in a backlog that nobody accepts from, to be reset then.
    /// </summary>
    private void StopListeningOnceWorkersStarted()
    {
        if (_listenersClosed)
        {
            return;
        }
        foreach (WorkerHandle worker in _workers.Values)
        {
            // It has not started its engine yet: the master's listen() for it may still be to come.
            if (!worker.Ready && !worker.Exited)
            {
                return;
            }
        }
        _listenersClosed = true;
        CloseListeners();
    }

    private void CloseListeners()
    {
        // A new master started by USR2 serves the same socket files now. Disposing a Socket that bound a
        // unix socket deletes its file (.NET does), so those are left to the process's exit to close.
        if (UpgradeChildAlive)
        {
            foreach (int slot in _slotSockets.Keys.ToArray()) CloseSlot(slot);
        }
        else
        {
            CloseAllSockets();
        }
    }

    private void CloseAllSockets()
    {
        foreach (int slot in _slotSockets.Keys.ToArray()) CloseSlot(slot);
        foreach (Socket? socket in _shared) socket?.Dispose();
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private sealed class SlotState
    {
        public int Failures;
        public DateTime NextSpawn;
        /// <summary>When the slot fell out of the worker count, and connections were steered away from it.</summary>
        public DateTime? RetiredAt;
    }

    /// <summary>The master's view of one worker process. Touched only on the main thread (except Channel).</summary>
    private sealed class WorkerHandle(Process process, int slot, int generation, Socket channel, TimeSpan grace)
    {
        public readonly Process Process = process;
        public readonly int Pid = process.Id;
        public readonly int Slot = slot;
        public readonly int Generation = generation;
        public readonly Socket Channel = channel;
        public bool Ready;
        public DateTime ReadyAt;
        public DateTime LastHeartbeat = DateTime.UtcNow;
        public long Requests;
        /// <summary>Another worker is to take this one's place; it is drained once that one is ready.</summary>
        public bool Replaced;
        public string? ReplaceReason;
        /// <summary>Asked for again while <see cref="Replaced"/>: taken up if the replacement fails.</summary>
        public string? ReplaceAgain;
        public bool Draining;
        public DateTime DrainDeadline;
        public bool KillSent;
        public bool ReportedExit;
        public bool Exited;
        public bool ChannelClosed;
        public int? FailureCode;
        public string? FailureText;

        public void Terminate()
        {
            if (Draining || KillSent)
            {
                return;
            }
            Draining = true;
            // A little beyond --graceful-timeout: the worker's own drain is bounded by it.
            DrainDeadline = DateTime.UtcNow + grace + TimeSpan.FromSeconds(2);
            Posix.Kill(Pid, Posix.SIGTERM);
        }

        public void Kill()
        {
            KillSent = true;
            Posix.Kill(Pid, Posix.SIGKILL);
        }

        /// <summary>QUIT: the worker exits at once, running only its worker_int and worker_exit hooks.</summary>
        public void Quit()
        {
            if (!KillSent)
            {
                Posix.Kill(Pid, Posix.SIGQUIT);
            }
        }

        public int ExitCode()
        {
            try
            {
                Process.WaitForExit();
                return Process.ExitCode;
            }
            catch (InvalidOperationException)
            {
                return -1;
            }
        }
    }
}
