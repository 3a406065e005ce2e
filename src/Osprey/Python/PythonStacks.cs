using System.Runtime.InteropServices;

namespace Osprey.Python;

/// <summary>
/// Writes the Python stack of every thread to a file descriptor from any thread, without the
/// GIL: the thread that holds it may be stuck in C code that never lets it go.
/// <para>
/// CPython has no public call for this, but faulthandler has a signal-safe dumper that walks the
/// interpreter's thread states without the GIL. <see cref="Install"/> registers it
/// (<c>faulthandler.register</c>) for a real-time signal that nothing in the process uses;
/// <see cref="DumpAllThreads"/> raises that signal on the calling thread, so the handler runs
/// there, synchronously, before <c>raise</c> returns. The .NET runtime takes SIGRTMIN itself
/// (thread activation injection), so the search starts above it, and only at a signal whose
/// handler is still the default, so no other handler is ever replaced.
/// </para>
/// </summary>
public static unsafe partial class PythonStacks
{
    // glibc's struct sigaction is 152 bytes on x86-64 and arm64; the handler is its first field.
    private const int SigactionSize = 152;
    private const int FirstCandidateAboveRtMin = 2;

    private static int s_signal;

    /// <summary>The signal in use, 0 before <see cref="Install"/>.</summary>
    public static int Signal => s_signal;

    [LibraryImport("libc.so.6", EntryPoint = "__libc_current_sigrtmin")]
    private static partial int CurrentSigRtMin();

    [LibraryImport("libc.so.6", EntryPoint = "__libc_current_sigrtmax")]
    private static partial int CurrentSigRtMax();

    [LibraryImport("libc.so.6", EntryPoint = "sigaction", SetLastError = true)]
    private static partial int Sigaction(int signal, void* action, void* oldAction);

    [LibraryImport("libc.so.6", EntryPoint = "raise")]
    private static partial int Raise(int signal);

    /// <summary>
    /// Registers the dumper for stacks written to <paramref name="fd"/>. Call once, with the GIL
    /// held, after the interpreter is initialised. Throws <see cref="PythonStartupException"/>
    /// when no signal is free.
    /// </summary>
    public static void Install(int fd)
    {
        int signal = FindUnusedSignal();
        if (signal == 0)
        {
            throw new PythonStartupException("--timeout: no free real-time signal to dump Python stacks with");
        }
        string code = $"import faulthandler\nfaulthandler.register({signal}, file={fd}, all_threads=True, chain=False)\n";
        try
        {
            using PyRef ns = Py.Run(code, "<osprey stacks>");
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
            throw new PythonStartupException($"--timeout: cannot register the Python stack dumper: {e.Message}");
        }
        s_signal = signal;
    }

    /// <summary>Writes every Python thread's stack to the registered descriptor. Any thread, GIL not needed.</summary>
    public static bool DumpAllThreads() => s_signal != 0 && Raise(s_signal) == 0;

    private static int FindUnusedSignal()
    {
        int min = CurrentSigRtMin();
        int max = CurrentSigRtMax();
        byte* current = stackalloc byte[SigactionSize];
        for (int signal = min + FirstCandidateAboveRtMin; signal < max; signal++)
        {
            if (Sigaction(signal, null, current) == 0 && *(nint*)current == 0)
            {
                return signal;
            }
        }
        return 0;
    }
}
