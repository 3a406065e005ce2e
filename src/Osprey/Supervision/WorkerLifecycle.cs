using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Supervision;

/// <summary>
/// A worker's side of the channel to the master (a socketpair end it inherited), and its signals.
/// Messages are single text lines: <c>listen</c>, <c>ready</c>, <c>hb REQUESTS</c>, <c>recycle REASON</c>,
/// <c>failed EXITCODE BASE64-TEXT</c>, <c>exiting REQUESTS</c>. The master's one answer is <c>listening</c>.
/// </summary>
public static class WorkerLifecycle
{
    private static readonly Lock s_writeLock = new();
    private static Socket? s_channel;
    private static WorkerContext? s_context;
    private static int s_recycleRequested;
    private static readonly ManualResetEventSlim s_stop = new();
    /// <summary>Set by the master's answer to <c>listen</c>, or when the master is gone.</summary>
    private static readonly ManualResetEventSlim s_listening = new();
    private static volatile bool s_masterGone;
    private static readonly List<PosixSignalRegistration> s_signals = [];
    private static QuickExit? s_quickExit;
    private static int s_quitting;

    /// <summary>What a quick exit needs once the worker serves: its request count, and the configuration's hooks.</summary>
    private sealed record QuickExit(Func<long> RequestCount, Action? Hooks, TimeSpan HookBound);

    /// <summary>Set when the worker must stop gracefully: TERM from the master, or the master is gone.</summary>
    public static WaitHandle StopRequested => s_stop.WaitHandle;

    public static bool IsWorker => s_context is not null;

    /// <summary>SIGKILL when the master dies; called again after a change of user, which clears it.</summary>
    public static void ArmParentDeathSignal()
    {
        Posix.SetParentDeathSignal(Posix.SIGKILL);
        if (s_context is { MasterPid: not 0 } context && Posix.ParentProcessId != context.MasterPid)
        {
            // The master died before PR_SET_PDEATHSIG took effect.
            Posix.ExitNow(0);
        }
    }

    /// <summary>
    /// Called first thing in a worker: the parent-death signal, the channel, the signal handlers.
    /// SIGKILL on the master's death: a worker stuck in C code with the GIL could not act on anything gentler,
    /// and a worker whose master is gone has no business serving (its replacement logic is gone too).
    /// </summary>
    public static void Attach(WorkerContext context)
    {
        s_context = context;
        ArmParentDeathSignal();
        // Inherited without FD_CLOEXEC; the application's own child processes must not inherit them in turn.
        Posix.SetInheritable(context.ChannelFd, false);
        foreach (int fd in context.ListenerFds)
        {
            Posix.SetInheritable(fd, false);
        }
        s_channel = new Socket(new SafeSocketHandle(context.ChannelFd, ownsHandle: true));

        PosixSignalHandler(PosixSignal.SIGTERM, () => s_stop.Set());
        // INT and QUIT mean now, as in gunicorn (Ctrl-C reaches every process of the terminal's group).
        PosixSignalHandler(PosixSignal.SIGINT, () => QuitNow("INT"));
        PosixSignalHandler(PosixSignal.SIGQUIT, () => QuitNow("QUIT"));
        // Meant for the master; a `kill -HUP -PGID` or a terminal must not stop or kill the workers.
        PosixSignalHandler(PosixSignal.SIGHUP, static () => { });
        PosixSignalHandler((PosixSignal)Posix.SIGTTIN, static () => { });
        PosixSignalHandler((PosixSignal)Posix.SIGTTOU, static () => { });
        PosixSignalHandler((PosixSignal)Posix.SIGUSR2, static () => { });
        // From the master after it reopened its own logs (logrotate); the default action would kill us.
        PosixSignalHandler((PosixSignal)Posix.SIGUSR1, static () =>
        {
            foreach (string problem in Log.Reopen())
            {
                Log.Warning(problem);
            }
        });

        // The master writes only "listening"; otherwise reading tells us when its end closes, i.e. the master is gone.
        new Thread(WatchMaster) { IsBackground = true, Name = "osprey-master-watch" }.Start();
    }

    private static void PosixSignalHandler(PosixSignal signal, Action action) =>
        s_signals.Add(PosixSignalRegistration.Create(signal, context =>
        {
            context.Cancel = true;
            action();
        }));

    private static void WatchMaster()
    {
        var buffer = new byte[64];
        try
        {
            while (s_channel!.Receive(buffer) > 0)
            {
                s_listening.Set();
            }
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
            return;
        }
        Log.Warning("The master process is gone; stopping");
        s_masterGone = true;
        s_listening.Set();
        s_stop.Set();
    }

    /// <summary>
    /// Called once the worker serves. A quick exit then reports the requests served and first runs
    /// <paramref name="hooks"/> (gunicorn's worker_int and worker_exit), if any, for at most
    /// <paramref name="hookBound"/>: they need the GIL, which a stuck thread may never give up.
    /// </summary>
    public static void PrepareQuickExit(Func<long> requestCount, Action? hooks, TimeSpan hookBound) =>
        s_quickExit = new QuickExit(requestCount, hooks, hookBound);

    /// <summary>
    /// INT or QUIT: gunicorn's quick exit. Requests in flight are cut off, nothing is drained; only the
    /// configuration's worker_int and worker_exit hooks run first, as in gunicorn's worker. A second INT or
    /// QUIT meanwhile (the master passes Ctrl-C's on) changes nothing: the first one's bound holds.
    /// </summary>
    private static void QuitNow(string signal)
    {
        if (Interlocked.Exchange(ref s_quitting, 1) != 0)
        {
            return;
        }
        QuickExit? quickExit = s_quickExit;
        if (quickExit?.Hooks is { } hooks)
        {
            var thread = new Thread(() => hooks()) { IsBackground = true, Name = "osprey-quit-hooks" };
            thread.Start();
            if (!thread.Join(quickExit.HookBound))
            {
                Log.Warning($"The worker_int/worker_exit hooks did not finish within {quickExit.HookBound.TotalSeconds:0.#} s (--graceful-timeout); exiting without them");
            }
        }
        long served = quickExit?.RequestCount() ?? 0;
        Log.Info($"Worker exiting (pid: {Environment.ProcessId}) on {signal}: served {served} requests");
        ReportExiting(served);
        Posix.ExitNow(0);
    }

    /// <summary>
    /// Asks the master to replace this worker gracefully: the master starts a replacement and, once it is
    /// ready, sends this worker TERM (stop accepting, finish in-flight requests within --graceful-timeout).
    /// Safe from any thread, needs no GIL, idempotent. Outside a master-run worker it only logs.
    /// </summary>
    public static void RequestRecycle(string reason)
    {
        if (Interlocked.Exchange(ref s_recycleRequested, 1) != 0)
        {
            return;
        }
        Log.Warning($"Recycle requested: {reason}");
        Send("recycle " + reason.ReplaceLineEndings(" "));
    }

    /// <summary>
    /// Like <see cref="RequestRecycle"/>, but asked again on every call: each code change under
    /// <c>--reload</c> deserves a new try after a replacement that could not import the last one.
    /// While a replacement is already on its way the master only notes it, and replaces this worker
    /// again if that replacement fails.
    /// </summary>
    public static void RequestReload(string reason)
    {
        Log.Info($"Reload requested: {reason}");
        Send("recycle " + reason.ReplaceLineEndings(" "));
    }

    /// <summary>
    /// Asks the master to start listening on this worker's sockets, and waits until it has (false: the master
    /// is gone). The master makes every listen() call, so that it can steer connections away from a retiring
    /// slot (<see cref="ReusePortSteering"/>). A TERM meanwhile does not cut this short: the worker starts
    /// and then drains like any other, with its worker_exit hook.
    /// </summary>
    public static bool ListenThroughMaster()
    {
        Send("listen");
        s_listening.Wait();
        return !s_masterGone;
    }

    public static void ReportReady() => Send("ready");

    /// <summary>The worker could not start: the master shows <paramref name="text"/> once, however many workers failed.</summary>
    public static void ReportFailure(int exitCode, string text) =>
        Send(string.Create(CultureInfo.InvariantCulture, $"failed {exitCode} {Convert.ToBase64String(Encoding.UTF8.GetBytes(text))}"));

    public static void ReportExiting(long requests) =>
        Send(string.Create(CultureInfo.InvariantCulture, $"exiting {requests}"));

    /// <summary>
    /// Heartbeats, sent by a thread that takes the GIL for each one. That is the point: a worker whose
    /// Python is wedged in C code holding the GIL (a busy C loop, a blocking call that never releases it)
    /// cannot send them, and the master kills it after --timeout. A request merely slow in Python or
    /// waiting on I/O releases the GIL periodically, so heartbeats go on and the in-worker --timeout
    /// (504 and a stack dump) deals with it instead. Also carries the request count, sets the process
    /// title, and asks for recycling once the request budget is spent.
    /// </summary>
    public static void StartHeartbeat(Func<long> requestCount, TimeSpan interval, Action<long> onBeat)
    {
        var thread = new Thread(() =>
        {
            var python = new PythonThread();
            python.Attach();
            int maxRequests = s_context?.MaxRequests ?? 0;
            // Also while draining: a drain stuck behind C code holding the GIL is then killed after --timeout
            // rather than --graceful-timeout.
            while (true)
            {
                python.TakeGil();
                python.DropGil();
                long requests = requestCount();
                Send(string.Create(CultureInfo.InvariantCulture, $"hb {requests}"));
                onBeat(requests);
                if (maxRequests > 0 && requests >= maxRequests && !s_stop.IsSet)
                {
                    RequestRecycle($"served {requests} requests (--max-requests)");
                }
                Thread.Sleep(interval);
            }
        })
        { IsBackground = true, Name = "osprey-heartbeat" };
        thread.Start();
    }

    private static void Send(string line)
    {
        if (s_channel is not { } channel)
        {
            return;
        }
        byte[] bytes = Encoding.UTF8.GetBytes(line + "\n");
        lock (s_writeLock)
        {
            try
            {
                int sent = 0;
                while (sent < bytes.Length)
                {
                    sent += channel.Send(bytes, sent, bytes.Length - sent, SocketFlags.None);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // The master is gone; WatchMaster stops the worker.
            }
        }
    }
}
