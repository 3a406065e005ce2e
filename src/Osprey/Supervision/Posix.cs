using System.Runtime.InteropServices;

namespace Osprey.Supervision;

/// <summary>The POSIX calls process supervision needs that .NET does not expose.</summary>
internal static partial class Posix
{
    private const int RLIMIT_NOFILE = 7;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimit(int resource, out RLimit limit);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
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
