using System.Runtime.InteropServices;
using Perfolizer.Horology;

namespace Osprey.Bench;

/// <summary>
/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in nanoseconds. On a shared machine
/// the wall clock also counts the time other processes hold the core; this clock counts only what
/// the benchmark thread itself spent, which is what a request costs. BenchmarkDotNet recreates it in
/// its child process with the parameterless constructor.
/// </summary>
public sealed class ThreadCpuClock : IClock
{
    private const int ClockThreadCpuTimeId = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

#pragma warning disable SYSLIB1054 // LibraryImport would need unsafe code for no gain in a benchmark harness.
    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);
#pragma warning restore SYSLIB1054

    public string Title => "thread CPU time";

    public bool IsAvailable => OperatingSystem.IsLinux();

    public Frequency Frequency => Frequency.GHz;

    public long GetTimestamp()
    {
        if (ClockGetTime(ClockThreadCpuTimeId, out TimeSpec now) != 0)
        {
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        }
        return now.Seconds * 1_000_000_000 + now.Nanoseconds;
    }
}
