using System.Runtime.InteropServices;
using System.Text;

namespace Osprey.Python;

/// <summary>Brings up the embedded interpreter once per process.</summary>
public static unsafe partial class PythonRuntime
{
    private static nint s_programName;

    public static PythonInstallation? Installation { get; private set; }

    [LibraryImport("libc.so.6", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    /// <summary>
    /// Sets a variable in the C environment, which is what Python's os.environ reads at start-up
    /// (.NET's Environment.SetEnvironmentVariable only changes its own copy).
    /// </summary>
    public static void SetEnvironmentVariable(string name, string value)
    {
        if (SetEnv(name, value, 1) != 0)
        {
            throw new PythonStartupException($"cannot set environment variable '{name}'");
        }
        Environment.SetEnvironmentVariable(name, value);
    }

    /// <summary>
    /// Loads libpython and initialises it as the interpreter <paramref name="installation"/> would
    /// run: CPython's own path logic starts from that executable, so it finds pyvenv.cfg, the
    /// prefix and site-packages exactly as the interpreter does. Returns without holding the GIL.
    /// </summary>
    public static void Initialize(PythonInstallation installation)
    {
        if (installation.SharedLibrary is null)
        {
            throw new PythonStartupException(
                $"{installation.Executable} (Python {installation.Version}) has no shared libpython: " +
                "Osprey embeds CPython and needs libpython3.X.so. Rebuild it with --enable-shared " +
                "(pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install " + installation.Version +
                "), or on Debian install libpython3.X");
        }
        PythonLibrary.Load(installation.SharedLibrary);
        if (OtherVersion(installation) is string libraryVersion)
        {
            throw new PythonStartupException(
                $"{installation.SharedLibrary} is Python {libraryVersion} but {installation.Executable} is Python {installation.Version}");
        }

        // Py_SetProgramName is in the stable ABI from 3.2 to 3.14; it is the one start-up setting we
        // need, and it spares us PyConfig, whose layout changes with every release.
        byte[] wide = Encoding.UTF32.GetBytes(installation.Executable + "\0");
        s_programName = (nint)NativeMemory.Alloc((nuint)wide.Length);
        wide.CopyTo(new Span<byte>((void*)s_programName, wide.Length));
        CPython.Py_SetProgramName(s_programName);

        // 0: leave signal handling to Osprey; the interpreter must not install SIGINT handlers.
        CPython.Py_InitializeEx(0);
        if (CPython.Py_IsInitialized() == 0)
        {
            throw new PythonStartupException($"CPython {installation.Version} failed to initialise");
        }
        Py.BindConstants();
        Py.BindTraceback();
        Installation = installation;
        CPython.PyEval_SaveThread();
    }

    /// <summary>
    /// The counterpart of <see cref="Initialize"/> for a worker that runs inside the interpreter's own
    /// executable (started as <c>python -c</c>, which called into Osprey without the GIL): Python is up
    /// already, with the prefix, sys.path and signal set-up the interpreter gave itself.
    /// </summary>
    public static void AttachToHost(PythonInstallation installation)
    {
        if (!PythonLibrary.UseHostProcess())
        {
            throw new PythonStartupException(
                $"this worker was started inside {installation.Executable}, but no running Python exports the C API to it");
        }
        if (OtherVersion(installation) is string running)
        {
            throw new PythonStartupException(
                $"this worker runs Python {running} but {installation.Executable} is Python {installation.Version}");
        }
        using (Gil.Acquire())
        {
            Py.BindConstants();
            Py.BindTraceback();
        }
        Installation = installation;
    }

    /// <summary>The version of the CPython the imports are bound to, when it is not <paramref name="installation"/>'s; otherwise null.</summary>
    private static string? OtherVersion(PythonInstallation installation)
    {
        string bound = Marshal.PtrToStringUTF8((nint)CPython.Py_GetVersion()) ?? "";
        return bound.StartsWith(installation.Version, StringComparison.Ordinal) ? null : bound.Split(' ')[0];
    }
}
