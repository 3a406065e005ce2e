using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Osprey.Supervision;

/// <summary>
/// The process supervisor's raw POSIX calls: descriptor inheritance, the worker channel's
/// socketpair, signals to children, the parent-death signal, umask, process titles, the open-file limit,
/// and the user and group workers run as.
/// Every pointer stays in this file.
/// </summary>
internal static unsafe partial class Posix
{
    private const string Libc = "libc";

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGQUIT = 3;
    public const int SIGHUP = 1;
    public const int SIGUSR1 = 10;
    public const int SIGUSR2 = 12;
    public const int SIGTTIN = 21;
    public const int SIGTTOU = 22;

    private const int F_GETFD = 1;
    private const int F_SETFD = 2;
    private const int FD_CLOEXEC = 1;
    private const int AF_UNIX = 1;
    private const int SOCK_STREAM = 1;
    private const int SOCK_CLOEXEC = 0x80000;
    private const int PR_SET_NAME = 15;
    private const int PR_SET_PDEATHSIG = 1;

    [LibraryImport(Libc, SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport(Libc, SetLastError = true)]
    private static partial int socketpair(int domain, int type, int protocol, int* fds);

    [LibraryImport(Libc, EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    [LibraryImport(Libc, SetLastError = true)]
    private static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(Libc, EntryPoint = "umask")]
    private static partial uint SysUmask(uint mask);

    [LibraryImport(Libc, EntryPoint = "getppid")]
    private static partial int SysGetppid();

    [LibraryImport(Libc, EntryPoint = "unsetenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysUnsetenv(string name);

    [LibraryImport(Libc, EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysSetenv(string name, string value, int overwrite);

    [LibraryImport(Libc, EntryPoint = "close")]
    private static partial int SysClose(int fd);

    [LibraryImport(Libc, EntryPoint = "_exit")]
    private static partial void SysExit(int status);

    [LibraryImport(Libc, EntryPoint = "signal")]
    private static partial nint SysSignal(int signal, nint handler);

    [LibraryImport(Libc, EntryPoint = "execv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysExecv(string path, string?[] argv);

    /// <summary>
    /// The master's control signals (HUP, INT, QUIT, TTIN, TTOU, TERM, USR1, USR2) must reach it even when it was
    /// started with them ignored, as under nohup or from a shell's background job: gunicorn's arbiter
    /// installs its handlers over an inherited SIG_IGN. .NET keeps an ignore it inherited and never
    /// installs a handler over it, so the master re-executes itself once with those signals back at
    /// their defaults. Returns only when nothing needed resetting (or exec failed, which is logged
    /// by the caller as the signals staying ignored).
    /// </summary>
    public static string? ReexecIfControlSignalsIgnored(IReadOnlyList<string> args)
    {
        int[] control = [SIGHUP, 2, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2];
        ulong ignored = IgnoredSignalMask();
        bool any = false;
        foreach (int signal in control)
        {
            if ((ignored & (1UL << (signal - 1))) != 0)
            {
                any = true;
                SysSignal(signal, 0 /* SIG_DFL */);
            }
        }
        string? path = Environment.ProcessPath;
        if (!any || path is null)
        {
            return null;
        }
        var argv = new string?[args.Count + 2];
        argv[0] = path;
        for (int i = 0; i < args.Count; i++)
        {
            argv[i + 1] = args[i];
        }
        SysExecv(path, argv);
        return $"cannot re-execute {path} to take over ignored signals (errno {Marshal.GetLastPInvokeError()}): HUP, INT, QUIT, TTIN, TTOU, USR1 and USR2 may be ignored";
    }

    /// <summary>The signals this process ignores (SigIgn in /proc/self/status; bit N-1 is signal N).</summary>
    private static ulong IgnoredSignalMask()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("SigIgn:", StringComparison.Ordinal))
                {
                    return ulong.Parse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                }
            }
        }
        catch (IOException)
        {
        }
        return 0;
    }

    /// <summary>Whether <paramref name="fd"/> survives exec: the master sets it only on what a worker must inherit.</summary>
    public static void SetInheritable(int fd, bool inheritable)
    {
        int flags = fcntl(fd, F_GETFD, 0);
        if (flags < 0)
        {
            throw new IOException($"fcntl(F_GETFD) on fd {fd}: errno {Marshal.GetLastPInvokeError()}");
        }
        int wanted = inheritable ? flags & ~FD_CLOEXEC : flags | FD_CLOEXEC;
        if (wanted != flags && fcntl(fd, F_SETFD, wanted) < 0)
        {
            throw new IOException($"fcntl(F_SETFD) on fd {fd}: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Whether <paramref name="fd"/> is an open descriptor of this process.</summary>
    public static bool IsOpen(int fd) => fcntl(fd, F_GETFD, 0) >= 0;

    /// <summary>A connected pair of Unix stream sockets, both close-on-exec.</summary>
    public static (int Master, int Worker) SocketPair()
    {
        int* fds = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        {
            throw new IOException($"socketpair: errno {Marshal.GetLastPInvokeError()}");
        }
        return (fds[0], fds[1]);
    }

    public static void Close(int fd) => SysClose(fd);

    /// <returns>false when the process no longer exists.</returns>
    public static bool Kill(int pid, int signal) => SysKill(pid, signal) == 0;

    public static uint Umask(uint mask) => SysUmask(mask);

    public static int ParentProcessId => SysGetppid();

    /// <summary>Removes a variable from the native environment (which Python and child processes see).</summary>
    public static void Unsetenv(string name)
    {
        SysUnsetenv(name);
        Environment.SetEnvironmentVariable(name, null);
    }

    [LibraryImport(Libc, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysStatx(int directoryFd, string path, int flags, uint mask, byte* buffer);

    private const int AT_FDCWD = -100;
    private const uint STATX_TYPE = 0x1;
    private const int ENOENT = 2;

    /// <summary>What is at a path (symbolic links followed), as far as a unix socket's bind is concerned.</summary>
    public enum PathKind { Missing, Socket, Other, Unknown }

    /// <summary>
    /// The file type of <paramref name="path"/>. .NET cannot tell: it reports a socket file as
    /// FileAttributes.Normal, like a regular file. statx, not stat: its struct is the same on every
    /// architecture (stx_mode is the 16 bits at offset 28).
    /// </summary>
    public static PathKind KindOf(string path)
    {
        const int StatxSize = 256;
        byte* buffer = stackalloc byte[StatxSize];
        int result;
        try
        {
            result = SysStatx(AT_FDCWD, path, 0, STATX_TYPE, buffer);
        }
        catch (EntryPointNotFoundException)
        {
            // glibc before 2.28.
            return File.Exists(path) || Directory.Exists(path) ? PathKind.Unknown : PathKind.Missing;
        }
        if (result != 0)
        {
            return Marshal.GetLastPInvokeError() == ENOENT ? PathKind.Missing : PathKind.Unknown;
        }
        const int S_IFMT = 0xF000, S_IFSOCK = 0xC000;
        ushort mode = *(ushort*)(buffer + 28);
        return (mode & S_IFMT) == S_IFSOCK ? PathKind.Socket : PathKind.Other;
    }

    /// <summary>Ends the process at once: no finalizers, no waiting for threads that may be stuck holding the GIL.</summary>
    public static void ExitNow(int status) => SysExit(status);

    /// <summary>
    /// Asks the kernel to send <paramref name="signal"/> when the parent goes away. The kernel ties this to the
    /// parent THREAD that forked us, which is why the master starts workers only from its main thread.
    /// </summary>
    public static void SetParentDeathSignal(int signal) => prctl(PR_SET_PDEATHSIG, (nuint)signal, 0, 0, 0);

    /// <summary>
    /// Sets what <c>ps</c> shows: the 15-byte command name (<c>ps -o comm</c>, <c>top</c>) through PR_SET_NAME on
    /// the calling thread (when given: call it from the main thread, whose name is the process's), and the command line (<c>ps aux</c>) by overwriting the
    /// original argv area in place, as setproctitle does, never growing past it.
    /// </summary>
    public static void SetProcessTitle(string? shortName, string title)
    {
        if (shortName is not null)
        {
            SetThreadName(shortName);
        }
        if (ArgvArea() is not (nuint start, nuint end) || end <= start + 1)
        {
            return;
        }
        var area = new Span<byte>((void*)start, checked((int)(end - start)));
        area.Clear();
        int length = Math.Min(Encoding.UTF8.GetByteCount(title), area.Length - 1);
        Encoding.UTF8.GetBytes(title).AsSpan(0, length).CopyTo(area);
    }

    private static void SetThreadName(string shortName)
    {
        byte[] name = Encoding.UTF8.GetBytes(shortName.Length > 15 ? shortName[..15] : shortName);
        byte* nameBuffer = stackalloc byte[16];
        new Span<byte>(nameBuffer, 16).Clear();
        name.AsSpan(0, Math.Min(name.Length, 15)).CopyTo(new Span<byte>(nameBuffer, 15));
        prctl(PR_SET_NAME, (nuint)nameBuffer, 0, 0, 0);
    }

    private static (nuint, nuint)? s_argvArea;
    private static bool s_argvAreaRead;

    /// <summary>arg_start and arg_end, fields 48 and 49 of /proc/self/stat (proc(5)).</summary>
    private static (nuint, nuint)? ArgvArea()
    {
        if (s_argvAreaRead)
        {
            return s_argvArea;
        }
        s_argvAreaRead = true;
        try
        {
            string stat = File.ReadAllText("/proc/self/stat");
            // The command name (field 2) is in parentheses and may contain spaces: count fields after its end.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // fields[0] is field 3 (state), so field N is fields[N - 3].
            s_argvArea = ((nuint)ulong.Parse(fields[48 - 3], CultureInfo.InvariantCulture),
                (nuint)ulong.Parse(fields[49 - 3], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or OverflowException)
        {
            s_argvArea = null;
        }
        return s_argvArea;
    }

    /// <summary>Resident set size of <paramref name="pid"/> in bytes (VmRSS of /proc/PID/status), or null if gone.</summary>
    public static long? ResidentBytes(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    string kb = line[6..].Trim();
                    int space = kb.IndexOf(' ', StringComparison.Ordinal);
                    if (space > 0) kb = kb[..space];
                    return long.Parse(kb, CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return null;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PasswdEntry
    {
        public byte* Name;
        public byte* Password;
        public uint UserId;
        public uint GroupId;
        // gecos, dir and shell follow; only the ids are read.
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct GroupEntry
    {
        public byte* Name;
        public byte* Password;
        public uint GroupId;
    }

    // Through libc, not by reading /etc/passwd: NSS (LDAP, sssd, systemd's dynamic users) answers too.
    [LibraryImport(Libc, EntryPoint = "getpwnam", StringMarshalling = StringMarshalling.Utf8)]
    private static partial PasswdEntry* SysGetpwnam(string name);

    [LibraryImport(Libc, EntryPoint = "getpwuid")]
    private static partial PasswdEntry* SysGetpwuid(uint uid);

    [LibraryImport(Libc, EntryPoint = "getgrnam", StringMarshalling = StringMarshalling.Utf8)]
    private static partial GroupEntry* SysGetgrnam(string name);

    [LibraryImport(Libc, EntryPoint = "geteuid")]
    private static partial uint SysGeteuid();

    [LibraryImport(Libc, EntryPoint = "getegid")]
    private static partial uint SysGetegid();

    [LibraryImport(Libc, EntryPoint = "setgroups", SetLastError = true)]
    private static partial int SysSetgroups(nuint size, uint* list);

    [LibraryImport(Libc, EntryPoint = "initgroups", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysInitgroups(string user, uint group);

    [LibraryImport(Libc, EntryPoint = "setgid", SetLastError = true)]
    private static partial int SysSetgid(uint gid);

    [LibraryImport(Libc, EntryPoint = "setuid", SetLastError = true)]
    private static partial int SysSetuid(uint uid);

    [LibraryImport(Libc, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysChown(string path, uint owner, uint group);

    [LibraryImport(Libc, EntryPoint = "setsid", SetLastError = true)]
    private static partial int SysSetsid();

    [LibraryImport(Libc, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysOpen(string path, int flags);

    [LibraryImport(Libc, EntryPoint = "dup2", SetLastError = true)]
    private static partial int SysDup2(int oldFd, int newFd);

    /// <summary>Leaves the terminal's session and process group (--daemon); false if it could not.</summary>
    public static bool NewSession() => SysSetsid() >= 0;

    /// <summary>Points stdin, stdout and stderr at /dev/null, as a daemon's are.</summary>
    public static void DetachStandardStreams()
    {
        const int O_RDWR = 2;
        int devNull = SysOpen("/dev/null", O_RDWR);
        if (devNull < 0)
        {
            return;
        }
        for (int fd = 0; fd <= 2; fd++)
        {
            if (devNull != fd)
            {
                SysDup2(devNull, fd);
            }
        }
        if (devNull > 2)
        {
            SysClose(devNull);
        }
    }

    private const string StdioReexecVariable = "OSPREY_STDIO_REEXEC";

    /// <summary>
    /// A command started with stdin, stdout or stderr closed (<c>2&gt;&amp;-</c>) gets /dev/null there, as
    /// daemons do, so that what it writes there is lost harmlessly and its exit code is what it would be
    /// with the stream open. By the time this runs, the .NET runtime has usually opened descriptors of its
    /// own on the free numbers (a pipe: writing to its read end fails, and .NET aborts on a failed write of
    /// an unhandled exception; its write end would fill and then block). Those are close-on-exec, which no
    /// inherited descriptor is, so they tell a closed stream; the process then re-executes itself once,
    /// with /dev/null on them, before it has done anything (as <see cref="ReexecIfControlSignalsIgnored"/>).
    /// </summary>
    public static void ReplaceClosedStandardStreams(IReadOnlyList<string> args)
    {
        const int O_RDWR = 2;
        bool reexecuted = Environment.GetEnvironmentVariable(StdioReexecVariable) is not null;
        if (reexecuted)
        {
            Unsetenv(StdioReexecVariable);
        }
        var taken = new List<int>(3);
        for (int fd = 0; fd <= 2; fd++)
        {
            int flags = fcntl(fd, F_GETFD, 0);
            if (flags >= 0 && (flags & FD_CLOEXEC) == 0)
            {
                continue;
            }
            if (flags >= 0)
            {
                taken.Add(fd);
                continue;
            }
            // Free: open returns the lowest free number, this one unless a lower one is free too (done first).
            int devNull = SysOpen("/dev/null", O_RDWR);
            if (devNull >= 0 && devNull != fd)
            {
                SysDup2(devNull, fd);
                SysClose(devNull);
            }
        }
        string? path = Environment.ProcessPath;
        if (taken.Count == 0 || reexecuted || path is null || !File.Exists(path))
        {
            return;
        }
        var argv = new string?[args.Count + 2];
        argv[0] = path;
        for (int i = 0; i < args.Count; i++)
        {
            argv[i + 1] = args[i];
        }
        int replacement = SysOpen("/dev/null", O_RDWR);
        if (replacement < 0)
        {
            return;
        }
        // In the C environment, which execv passes on (.NET's own is a copy).
        SysSetenv(StdioReexecVariable, "1", 1);
        // The runtime's descriptors are given up only now, just before exec replaces the whole image.
        foreach (int fd in taken)
        {
            SysDup2(replacement, fd);
        }
        SysExecv(path, argv);
        // Not expected (the executable runs already); what was on those numbers is /dev/null now.
        SysClose(replacement);
        Unsetenv(StdioReexecVariable);
    }

    public static uint EffectiveUserId => SysGeteuid();

    public static uint EffectiveGroupId => SysGetegid();

    /// <summary>A user's id and primary group by name, from the passwd database.</summary>
    public static bool TryGetUser(string name, out uint userId, out uint groupId)
    {
        PasswdEntry* entry = SysGetpwnam(name);
        userId = entry is null ? 0 : entry->UserId;
        groupId = entry is null ? 0 : entry->GroupId;
        return entry is not null;
    }

    /// <summary>A user's name by id, when the passwd database knows it.</summary>
    public static string? UserName(uint userId)
    {
        PasswdEntry* entry = SysGetpwuid(userId);
        return entry is null ? null : Marshal.PtrToStringUTF8((nint)entry->Name);
    }

    /// <summary>The primary group of a user id, when the passwd database knows it.</summary>
    public static bool TryGetPrimaryGroup(uint userId, out uint groupId)
    {
        PasswdEntry* entry = SysGetpwuid(userId);
        groupId = entry is null ? 0 : entry->GroupId;
        return entry is not null;
    }

    public static bool TryGetGroup(string name, out uint groupId)
    {
        GroupEntry* entry = SysGetgrnam(name);
        groupId = entry is null ? 0 : entry->GroupId;
        return entry is not null;
    }

    /// <summary>
    /// Makes the process <paramref name="userId"/> with <paramref name="groupId"/> as its only group,
    /// for good: the supplementary groups first and the user last, since each step needs the
    /// privilege the next one gives up. glibc applies each call to every thread of the process.
    /// Returns 0, or the errno of the step that failed.
    /// </summary>
    /// <param name="supplementaryOf">
    /// --initgroups: the user whose groups in the group database (initgroups(3)) join <paramref name="groupId"/>.
    /// </param>
    public static int SwitchIdentity(uint userId, uint groupId, string? supplementaryOf = null)
    {
        uint only = groupId;
        int groups = supplementaryOf is null ? SysSetgroups(1, &only) : SysInitgroups(supplementaryOf, groupId);
        if (groups != 0 || SysSetgid(groupId) != 0 || SysSetuid(userId) != 0)
        {
            return Marshal.GetLastPInvokeError();
        }
        return 0;
    }

    /// <summary>chown(2); returns 0 or the errno.</summary>
    public static int Chown(string path, uint userId, uint groupId) =>
        SysChown(path, userId, groupId) == 0 ? 0 : Marshal.GetLastPInvokeError();

    private const int RLIMIT_NOFILE = 7;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport(Libc, EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimit(int resource, out RLimit limit);

    [LibraryImport(Libc, EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRLimit(int resource, in RLimit limit);

    /// <summary>
    /// Raises the open-file soft limit to the hard limit, as nginx and most servers do: every
    /// connection is a descriptor, and the usual soft limit (1024) is below --max-connections.
    /// Returns the limit now in force, or -1 if it could not be read.
    /// </summary>
    public static long RaiseOpenFileLimit()
    {
        if (GetRLimit(RLIMIT_NOFILE, out RLimit limit) != 0)
        {
            return -1;
        }
        if (limit.Current < limit.Maximum)
        {
            var raised = new RLimit { Current = limit.Maximum, Maximum = limit.Maximum };
            if (SetRLimit(RLIMIT_NOFILE, raised) == 0)
            {
                return (long)Math.Min(raised.Current, long.MaxValue);
            }
        }
        return (long)Math.Min(limit.Current, long.MaxValue);
    }
}
