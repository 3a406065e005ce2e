using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Osprey.Supervision;

/// <summary>
/// <c>--daemon</c>. A .NET process cannot fork, so the command starts a copy of itself in a new
/// session and waits: it returns 0 once the copy's first worker is ready, or the copy's own exit
/// code if it fails to start, with the copy's output (its error) relayed to the terminal
/// (gunicorn forks before anything is checked, so a daemon's start-up errors reach only its
/// log). Once ready, the master and its workers have their stdin, stdout and stderr on /dev/null,
/// unless <c>-R/--enable-stdio-inheritance</c> asks them to keep the command's (a file, or a
/// supervisor's pipe, that the command's caller gave it).
/// </summary>
internal static class Daemon
{
    // The copy's end of a socketpair to say "ready" on; its closing without that means failure.
    private const string ReadyVariable = "OSPREY_DAEMON_READY_FD";
    // For the workers: they drop the terminal at once (their failures reach the master through the channel).
    internal const string WorkerVariable = "OSPREY_DAEMON_WORKER";

    private static Socket? s_ready;
    private static bool s_keepStandardStreams;

    /// <summary>The command's side: starts the detached master and returns the command's exit code.</summary>
    /// <param name="keepStandardStreams">-R: the copy gets this command's stdin, stdout and stderr for good.</param>
    /// <param name="errorLog">--error-logfile, to point to when the server does not start.</param>
    public static int Start(IReadOnlyList<string> argv, bool keepStandardStreams, string errorLog)
    {
        (int ours, int theirs) = Posix.SocketPair();
        // Without -R the copy's stdio are pipes to this command, which relays them until the copy is
        // ready: had it the terminal's (or a caller's pipes) itself, the duplicates .NET keeps of
        // them would hold them open for the daemon's whole life. With -R that is what is asked for.
        ProcessStartInfo start = Master.StartInfoOfThisExecutable(argv);
        start.RedirectStandardInput = start.RedirectStandardOutput = start.RedirectStandardError = !keepStandardStreams;
        start.Environment[ReadyVariable] = theirs.ToString(CultureInfo.InvariantCulture);
        Process master;
        Posix.SetInheritable(theirs, true);
        try
        {
            master = Process.Start(start) ?? throw new IOException("the detached master did not start");
        }
        finally
        {
            Posix.Close(theirs);
        }
        if (!keepStandardStreams)
        {
            master.OutputDataReceived += (_, e) => Relay(Console.Out, e.Data);
            master.ErrorDataReceived += (_, e) => Relay(Console.Error, e.Data);
            master.BeginOutputReadLine();
            master.BeginErrorReadLine();
            master.StandardInput.Close();
        }
        using var channel = new Socket(new SafeSocketHandle((nint)ours, ownsHandle: true));
        var buffer = new byte[16];
        int received = 0;
        try
        {
            int n;
            while (received < buffer.Length && (n = channel.Receive(buffer, received, buffer.Length - received, SocketFlags.None)) > 0)
            {
                received += n;
            }
        }
        catch (SocketException)
        {
        }
        if (Encoding.ASCII.GetString(buffer, 0, received) == "ready")
        {
            return 0;
        }
        // Failed: its workers are gone with it, so its output ends; wait for the last lines too.
        master.WaitForExit();
        if (errorLog != "-" && File.Exists(errorLog))
        {
            // The master said its errors here too (Log.EchoErrorsWhileStarting), but a traceback only in the log.
            Console.Error.WriteLine($"osprey: the server did not start; its error log, with any traceback, is {errorLog}");
        }
        return master.ExitCode == 0 ? 1 : master.ExitCode;
    }

    private static void Relay(TextWriter to, string? line)
    {
        if (line is not null)
        {
            to.WriteLine(line);
        }
    }

    /// <summary>Whether this process is the master that a --daemon command started.</summary>
    public static bool IsDetachedMaster => Environment.GetEnvironmentVariable(ReadyVariable) is not null;

    /// <summary>The detached master's first step: its own session, away from the terminal's signals.</summary>
    /// <param name="keepStandardStreams">-R: the master and its workers keep stdin, stdout and stderr.</param>
    public static void DetachMaster(bool keepStandardStreams)
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(ReadyVariable), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
        {
            return;
        }
        Posix.Unsetenv(ReadyVariable);
        Posix.SetInheritable(fd, false);
        s_ready = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        Posix.NewSession();
        Logging.Log.EchoErrorsWhileStarting();
        s_keepStandardStreams = keepStandardStreams;
        if (!keepStandardStreams)
        {
            Environment.SetEnvironmentVariable(WorkerVariable, "1");
        }
    }

    /// <summary>The first worker is serving: drop the terminal and let the command return 0.</summary>
    public static void ReportReady()
    {
        if (Interlocked.Exchange(ref s_ready, null) is not { } ready)
        {
            return;
        }
        Logging.Log.StopStartupEcho();
        if (!s_keepStandardStreams)
        {
            Posix.DetachStandardStreams();
            Logging.Log.StandardStreamsReplaced();
        }
        try
        {
            ready.Send("ready"u8);
        }
        catch (SocketException)
        {
            // The command was interrupted: nobody is waiting.
        }
        ready.Dispose();
    }

    /// <summary>A worker of a detached master: stdio on /dev/null before anything is written.</summary>
    public static void DetachWorker()
    {
        if (Environment.GetEnvironmentVariable(WorkerVariable) is not null)
        {
            Posix.Unsetenv(WorkerVariable);
            Posix.DetachStandardStreams();
        }
    }
}
