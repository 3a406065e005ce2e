using System.Reflection;
using System.Runtime.InteropServices;

namespace Osprey.Python;

/// <summary>
/// Loads the libpython that <see cref="PythonInstallation"/> found and points every
/// <see cref="CPython"/> import at it.
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

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name == CPython.Lib ? s_handle : 0;

    /// <summary>Address of an exported data symbol such as <c>_Py_NoneStruct</c>.</summary>
    public static nint Export(string symbol) => NativeLibrary.GetExport(s_handle, symbol);

    public static bool TryExport(string symbol, out nint address) => NativeLibrary.TryGetExport(s_handle, symbol, out address);
}
