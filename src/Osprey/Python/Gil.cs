namespace Osprey.Python;

/// <summary>
/// GIL scopes. A thread that runs Python keeps one thread state for its whole life
/// (<see cref="PythonThread"/>); these scopes only move the GIL.
/// </summary>
public static class Gil
{
    /// <summary>Holds the GIL on any thread, creating a temporary thread state when needed.</summary>
    public static Acquired Acquire() => new(CPython.PyGILState_Ensure());

    /// <summary>Lets other Python threads run while this one waits on I/O. Dispose takes the GIL back.</summary>
    public static Released Release() => new(CPython.PyEval_SaveThread());

    public static bool IsHeld => CPython.PyGILState_Check() != 0;

    public readonly struct Acquired(int state) : IDisposable
    {
        public void Dispose() => CPython.PyGILState_Release(state);
    }

    public readonly struct Released(nint threadState) : IDisposable
    {
        public void Dispose() => CPython.PyEval_RestoreThread(threadState);
    }
}

/// <summary>
/// A dedicated OS thread that runs Python: it owns a thread state for its lifetime and
/// holds the GIL only while it has Python work.
/// </summary>
public sealed class PythonThread
{
    private nint _savedState;

    /// <summary>Python's identifier of this thread (<c>threading.get_ident()</c>), as faulthandler prints it.</summary>
    public ulong Ident { get; private set; }

    /// <summary>Call first on the new thread; it returns without the GIL.</summary>
    public void Attach()
    {
        CPython.PyGILState_Ensure();
        Ident = CPython.PyThread_get_thread_ident();
        _savedState = CPython.PyEval_SaveThread();
    }

    public void TakeGil() => CPython.PyEval_RestoreThread(_savedState);

    public void DropGil() => _savedState = CPython.PyEval_SaveThread();
}
