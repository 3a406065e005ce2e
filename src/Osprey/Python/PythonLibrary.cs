using System.Reflection;
using System.Runtime.InteropServices;

namespace Osprey.Python;

/// <summary>
/// Points every <see cref="CPython"/> import at the interpreter: the libpython that
/// <see cref="PythonInstallation"/> found (<see cref="Load"/>), or the interpreter this process
/// already runs in (<see cref="UseHostProcess"/>).
/// </summary>
internal static partial class PythonLibrary
{
    private const int RTLD_NOW = 0x2;
    private const int RTLD_GLOBAL = 0x100;

    private static nint s_handle;

    public static nint Handle => s_handle;

    // RTLD_GLOBAL matters: C extension modules (Debian builds them without a libpython
    // dependency) expect the interpreter's symbols in the global namespace, as they are in the
    // python executable. NativeLibrary.Load uses RTLD_LOCAL, so we call dlopen ourselves.
    [LibraryImport("libc.so.6", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Dlopen(string path, int flags);

    [LibraryImport("libc.so.6", EntryPoint = "dlerror")]
    private static partial nint Dlerror();

    public static void Load(string path)
    {
        if (s_handle != 0)
        {
            throw new InvalidOperationException("libpython is already loaded");
        }
        nint handle = Dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (handle == 0)
        {
            string reason = Marshal.PtrToStringUTF8(Dlerror()) ?? "unknown dlopen error";
            throw new PythonStartupException($"cannot load {path}: {reason}");
        }
        s_handle = handle;
        NativeLibrary.SetDllImportResolver(typeof(PythonLibrary).Assembly, Resolve);
    }

    /// <summary>
    /// This process is a Python interpreter that called into Osprey: the C API is in the global
    /// namespace already, exported by the executable (a static build) or by the libpython it links.
    /// False when it is not there, or when Python is not running.
    /// </summary>
    public static unsafe bool UseHostProcess()
    {
        if (s_handle != 0)
        {
            throw new InvalidOperationException("libpython is already loaded");
        }
        nint program = NativeLibrary.GetMainProgramHandle();
        if (!NativeLibrary.TryGetExport(program, "Py_IsInitialized", out nint isInitialized)
            || ((delegate* unmanaged<int>)isInitialized)() == 0)
        {
            return false;
        }
        s_handle = program;
        NativeLibrary.SetDllImportResolver(typeof(PythonLibrary).Assembly, Resolve);
        return true;
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name == CPython.Lib ? s_handle : 0;

    /// <summary>Address of an exported data symbol such as <c>_Py_NoneStruct</c>.</summary>
    public static nint Export(string symbol) => NativeLibrary.GetExport(s_handle, symbol);

    public static bool TryExport(string symbol, out nint address) => NativeLibrary.TryGetExport(s_handle, symbol, out address);
}
