using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Osprey.Logging;

public enum Severity { Debug, Info, Warning, Error, Critical }

/// <summary>
/// The error log, in gunicorn's format: <c>[2026-11-25 10:00:00 +0000] [PID] [INFO] message</c>.
/// Application output (print, sys.stderr, wsgi.errors) is written to it verbatim.
/// Every layer logs here, so it sits below all of them.
/// </summary>
public static partial class Log
{
    private static readonly Lock s_lock = new();
    private static Stream s_errors = Console.OpenStandardError();
    private static Stream? s_access;
    private static Severity s_minimum = Severity.Info;
    private static readonly int s_pid = Environment.ProcessId;

    private static string? s_errorPath;
    private static string? s_accessPath;

    // --daemon while starting: the command's stderr, where errors are said too when the error log is a file.
    private static FileStream? s_startupEcho;

    // --capture-output: fds 1 and 2 are the error log file; these are what they were before (-1: not captured).
    private static bool s_capture;
    private static int s_savedStdout = -1;
    private static int s_savedStderr = -1;

    /// <summary>
    /// Opens the logs; called again by the master when a reload (HUP) changes them, which closes the
    /// files it had. Nothing changes if either cannot be opened.
    /// </summary>
    /// <param name="captureOutput">
    /// --capture-output: with an error log file, this process's stdout and stderr (fds 1 and 2, which
    /// child processes and C code write to) become that file, as gunicorn's do; inherited by the processes it starts.
    /// </param>
    /// <exception cref="IOException">A file cannot be opened; the message names the option and says why.</exception>
    public static void Configure(Severity minimum, string errorLog, string? accessLog, bool captureOutput = false)
    {
        Stream errors = OpenTarget("--error-logfile", errorLog, Console.OpenStandardError);
        Stream? access;
        try
        {
            access = accessLog is null ? null : OpenTarget("--access-logfile", accessLog, Console.OpenStandardOutput);
        }
        catch (IOException)
        {
            errors.Dispose();
            throw;
        }
        Stream previousErrors;
        Stream? previousAccess;
        lock (s_lock)
        {
            (previousErrors, previousAccess) = (s_errors, s_access);
            s_minimum = minimum;
            s_errors = errors;
            s_access = access;
            s_errorPath = errorLog == "-" ? null : errorLog;
            s_accessPath = accessLog is null or "-" ? null : accessLog;
            s_capture = captureOutput && s_errorPath is not null;
            CaptureStandardStreams();
        }
        // Only files: the standard streams stay open for whoever else writes to them.
        (previousErrors as FileStream)?.Dispose();
        (previousAccess as FileStream)?.Dispose();
    }

    /// <summary>The log files (not stdout or stderr), for the master to give to the workers' user.</summary>
    public static IReadOnlyList<string> Files
    {
        get
        {
            var files = new List<string>(2);
            if (s_errorPath is not null)
            {
                files.Add(s_errorPath);
            }
            if (s_accessPath is not null && s_accessPath != s_errorPath)
            {
                files.Add(s_accessPath);
            }
            return files;
        }
    }

    /// <summary>
    /// Opens the log files again by name (USR1, after logrotate moved them away). Each new file
    /// takes over the old one's descriptor number (dup3), so whatever holds that number keeps
    /// writing to the log: Python's faulthandler was given it for the --timeout stack dumps.
    /// Returns one line per file that could not be opened; that log stays on its old file.
    /// </summary>
    public static List<string> Reopen()
    {
        var problems = new List<string>();
        lock (s_lock)
        {
            // Each has its own descriptor, even when both logs name the same file.
            ReopenOne(s_errors, s_errorPath, problems);
            ReopenOne(s_access, s_accessPath, problems);
            CaptureStandardStreams();
        }
        return problems;
    }

    /// <summary>
    /// Fds 1 and 2 were just pointed elsewhere (--daemon: /dev/null): that is now what they go back to
    /// without --capture-output, and with it they are the error log again.
    /// </summary>
    public static void StandardStreamsReplaced()
    {
        lock (s_lock)
        {
            ForgetSavedStreams();
            CaptureStandardStreams();
        }
    }

    // Under s_lock.
    private static void CaptureStandardStreams()
    {
        if (s_capture && s_errors is FileStream file)
        {
            Console.Out.Flush();
            Console.Error.Flush();
            if (s_savedStdout < 0)
            {
                s_savedStdout = FcntlNative(1, F_DUPFD_CLOEXEC, 3);
                s_savedStderr = FcntlNative(2, F_DUPFD_CLOEXEC, 3);
            }
            int fd = (int)file.SafeFileHandle.DangerousGetHandle();
            // dup2 leaves 1 and 2 inheritable: a subprocess the application starts writes to the log too.
            Dup2Native(fd, 1);
            Dup2Native(fd, 2);
        }
        else if (s_savedStdout >= 0)
        {
            // A reload turned it off, or made the error log stderr.
            Dup2Native(s_savedStdout, 1);
            Dup2Native(s_savedStderr, 2);
            ForgetSavedStreams();
        }
    }

    private static void ForgetSavedStreams()
    {
        if (s_savedStdout >= 0)
        {
            CloseNative(s_savedStdout);
        }
        if (s_savedStderr >= 0)
        {
            CloseNative(s_savedStderr);
        }
        s_savedStdout = s_savedStderr = -1;
    }

    private static void ReopenOne(Stream? stream, string? path, List<string> problems)
    {
        if (stream is not FileStream file || path is null)
        {
            return;
        }
        int fd = OpenNative(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0x1B6);
        int target = (int)file.SafeFileHandle.DangerousGetHandle();
        // dup3, not dup2: the number keeps O_CLOEXEC (an application's child processes must not inherit the log).
        if (fd < 0 || Dup3Native(fd, target, O_CLOEXEC) < 0)
        {
            problems.Add($"cannot reopen {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}; still writing to the file it had");
        }
        if (fd >= 0)
        {
            CloseNative(fd);
        }
    }

    /// <exception cref="IOException">The file cannot be opened; the message names the option and says why.</exception>
    private static Stream OpenTarget(string option, string path, Func<Stream> dash)
    {
        try
        {
            return path == "-" ? dash() : OpenForAppend(path);
        }
        catch (IOException e)
        {
            throw new IOException($"{option}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Opens a log file with O_APPEND, as Python's open(path, "a") does. FileMode.Append does not:
    /// .NET writes at a position it tracks itself, so the master and its workers, each with its own
    /// position in the one file, would overwrite each other's lines. With O_APPEND Linux appends
    /// every write at the end of the file whatever that position says.
    /// </summary>
    private static FileStream OpenForAppend(string path)
    {
        int fd = OpenNative(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0x1B6 /* 0666, less the umask */);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot open {path}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        return new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 1);
    }

    private const int O_WRONLY = 0x1, O_CREAT = 0x40, O_APPEND = 0x400, O_CLOEXEC = 0x80000;
    private const int F_DUPFD_CLOEXEC = 1030;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenNative(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "dup3", SetLastError = true)]
    private static partial int Dup3Native(int oldFd, int newFd, int flags);

    [LibraryImport("libc", EntryPoint = "dup2")]
    private static partial int Dup2Native(int oldFd, int newFd);

    [LibraryImport("libc", EntryPoint = "fcntl")]
    private static partial int FcntlNative(int fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int CloseNative(int fd);

    /// <summary>
    /// A --daemon master until it serves: its command is waiting on the other end of stderr to tell the user
    /// why it did not start, which with an error log file would otherwise be only in that file. From now on,
    /// errors also go to stderr as it is now (a copy, so that --capture-output's redirection of fd 2 and the
    /// daemon's /dev/null do not change it); until <see cref="StopStartupEcho"/>.
    /// </summary>
    public static void EchoErrorsWhileStarting()
    {
        int fd = FcntlNative(2, F_DUPFD_CLOEXEC, 3);
        if (fd >= 0)
        {
            lock (s_lock)
            {
                s_startupEcho = new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 1);
            }
        }
    }

    /// <summary>The server is ready (or the command gone): errors are the log's alone again.</summary>
    public static void StopStartupEcho()
    {
        lock (s_lock)
        {
            s_startupEcho?.Dispose();
            s_startupEcho = null;
        }
    }

    public static bool IsEnabled(Severity severity) => severity >= s_minimum;
    public static bool AccessLogEnabled => s_access is not null;

    public static void Debug(string message) => Write(Severity.Debug, message);
    public static void Info(string message) => Write(Severity.Info, message);
    public static void Warning(string message) => Write(Severity.Warning, message);
    public static void Error(string message) => Write(Severity.Error, message);
    public static void Critical(string message) => Write(Severity.Critical, message);

    public static void Write(Severity severity, string message)
    {
        if (severity < s_minimum)
        {
            return;
        }
        string label = severity switch
        {
            Severity.Debug => "DEBUG",
            Severity.Info => "INFO",
            Severity.Warning => "WARNING",
            Severity.Error => "ERROR",
            _ => "CRITICAL",
        };
        DateTimeOffset now = DateTimeOffset.Now;
        string line = string.Create(CultureInfo.InvariantCulture, $"[{now:yyyy-MM-dd HH:mm:ss} {UtcOffset(now)}] [{s_pid}] [{label}] {message}\n");
        byte[] bytes = Encoding.UTF8.GetBytes(line);
        WriteRaw(accessLog: false, bytes);
        if (severity >= Severity.Error && s_startupEcho is not null)
        {
            EchoWhileStarting(bytes);
        }
        if (severity >= Severity.Warning && Statsd.Current is { } statsd)
        {
            statsd.Increment(severity switch
            {
                Severity.Warning => "gunicorn.log.warning"u8,
                Severity.Error => "gunicorn.log.error"u8,
                _ => "gunicorn.log.critical"u8,
            });
        }
    }

    /// <summary>The UTC offset as gunicorn writes it (+0000), which .NET's "zzz" spells +00:00.</summary>
    public static string UtcOffset(DateTimeOffset time) =>
        time.ToString("zzz", CultureInfo.InvariantCulture).Replace(":", "", StringComparison.Ordinal);

    /// <summary>Application output, as the application wrote it.</summary>
    public static void Raw(ReadOnlySpan<byte> utf8) => WriteRaw(accessLog: false, utf8);

    /// <summary>
    /// Writes <paramref name="message"/> as a log line, then lets <paramref name="writeToFd"/>
    /// write straight to the error log's file descriptor (native code that cannot use the
    /// stream: Python's faulthandler), with no other log line in between.
    /// </summary>
    public static void WriteWithDescriptor(Severity severity, string message, Action<int> writeToFd)
    {
        lock (s_lock)
        {
            Write(severity, message);
            writeToFd(ErrorLogDescriptor);
            if (s_errors is FileStream { CanSeek: true } file)
            {
                // FileStream writes at the position it tracks itself (pwrite), not at the
                // descriptor's: without this, the next line would overwrite what was just written.
                try
                {
                    file.Seek(0, SeekOrigin.End);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    /// <summary>The error log's file descriptor: every write to it goes straight through (no buffer to flush first).</summary>
    public static int ErrorLogDescriptor =>
        s_errors is FileStream file ? (int)file.SafeFileHandle.DangerousGetHandle() : 2;

    public static void Access(ReadOnlySpan<byte> line)
    {
        if (s_access is not null)
        {
            WriteRaw(accessLog: true, line);
        }
    }

    private static void EchoWhileStarting(byte[] line)
    {
        lock (s_lock)
        {
            // With the error log on stderr the line is there already.
            if (s_startupEcho is not { } echo || s_errors is not FileStream)
            {
                return;
            }
            try
            {
                echo.Write(line);
                echo.Flush();
            }
            catch (IOException)
            {
                // The command was interrupted: nobody reads.
            }
        }
    }

    private static void WriteRaw(bool accessLog, ReadOnlySpan<byte> bytes)
    {
        lock (s_lock)
        {
            // Read under the lock: Configure may have just swapped (and closed) the stream.
            Stream? stream = accessLog ? s_access : s_errors;
            if (stream is null)
            {
                return;
            }
            try
            {
                stream.Write(bytes);
                stream.Flush();
            }
            catch (IOException)
            {
                // A closed or full log must not take requests down with it.
            }
        }
    }
}
