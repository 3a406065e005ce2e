using System.ComponentModel;
using System.Diagnostics;

namespace Osprey.Python;

/// <summary>An error that stops start-up; its message is the one line the user sees.</summary>
public sealed class PythonStartupException(string message, string? traceback = null) : Exception(message)
{
    public string? PythonTraceback { get; } = traceback;
}

/// <summary>
/// What the chosen interpreter says about itself: the facts needed to embed the same Python,
/// with the same sys.prefix, sys.path and site-packages, in this process.
/// </summary>
public sealed record PythonInstallation(
    string Interpreter,
    string Executable,
    string Version,
    string Prefix,
    string ExecPrefix,
    string BasePrefix,
    IReadOnlyList<string> SysPath,
    string? SharedLibrary)
{
    // Printed one fact per line, so no JSON parser is needed; sys.path entries cannot contain newlines
    // in any setup worth supporting.
    private const string Probe = """
import sys, os, sysconfig
def find_library():
    v = sysconfig.get_config_var
    names = [v('INSTSONAME'), v('LDLIBRARY'), 'libpython%d.%d%s.so.1.0' % (sys.version_info[0], sys.version_info[1], getattr(sys, 'abiflags', '')), 'libpython%d.%d.so.1.0' % sys.version_info[:2], 'libpython%d.%d.so' % sys.version_info[:2]]
    dirs = [v('LIBDIR'), os.path.join(sys.base_prefix, 'lib'), os.path.join(v('LIBDIR') or '', v('MULTIARCH') or '')]
    if v('MULTIARCH'):
        dirs += ['/usr/lib/' + v('MULTIARCH'), '/lib/' + v('MULTIARCH')]
    for d in dirs:
        for n in names:
            if d and n and '.so' in n:
                p = os.path.join(d, n)
                if os.path.isfile(p):
                    return os.path.realpath(p)
    return ''
print('executable=' + sys.executable)
print('version=%d.%d.%d' % sys.version_info[:3])
print('prefix=' + sys.prefix)
print('exec_prefix=' + sys.exec_prefix)
print('base_prefix=' + sys.base_prefix)
print('library=' + find_library())
for p in sys.path:
    print('path=' + p)
""";

    /// <summary>
    /// The interpreter Osprey embeds: <paramref name="explicitPath"/> (--python), otherwise
    /// $VIRTUAL_ENV/bin/python, otherwise python3 on PATH, as gunicorn would run from that shell.
    /// Always an absolute path: .NET's Process.Start looks for a bare name in the executable's directory
    /// and then the current one before PATH, so a ./python3 left in the directory osprey starts in
    /// (often as root) would run.
    /// </summary>
    /// <exception cref="PythonStartupException">A bare name that is not on PATH.</exception>
    public static string ChooseInterpreter(string? explicitPath)
    {
        if (!string.IsNullOrEmpty(explicitPath))
        {
            return Locate(explicitPath);
        }
        string? venv = Environment.GetEnvironmentVariable("VIRTUAL_ENV");
        if (!string.IsNullOrEmpty(venv))
        {
            return Path.GetFullPath(Path.Combine(venv, "bin", "python"));
        }
        return Locate("python3");
    }

    /// <summary>A path as it is (made absolute); a bare name searched for on PATH only.</summary>
    private static string Locate(string program)
    {
        if (program.Contains('/', StringComparison.Ordinal))
        {
            return Path.GetFullPath(program);
        }
        return FindOnPath(program, Environment.GetEnvironmentVariable("PATH"))
            ?? throw new PythonStartupException($"'{program}' was not found on PATH (name the interpreter with --python)");
    }

    /// <summary>
    /// Where execvp(3) finds <paramref name="program"/>: the first executable file of that name in the
    /// directories of <paramref name="pathVariable"/>, in order. The current directory only when PATH
    /// names it (an empty entry, or "."). Without PATH, glibc's default, /bin:/usr/bin.
    /// </summary>
    internal static string? FindOnPath(string program, string? pathVariable)
    {
        foreach (string directory in (pathVariable ?? "/bin:/usr/bin").Split(':'))
        {
            string candidate = Path.GetFullPath(Path.Combine(directory.Length == 0 ? "." : directory, program));
            if (IsExecutableFile(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private static bool IsExecutableFile(string path)
    {
        const UnixFileMode AnyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        try
        {
            return !OperatingSystem.IsWindows() && File.Exists(path) && (File.GetUnixFileMode(path) & AnyExecute) != 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    public static PythonInstallation Discover(string interpreter, string? workingDirectory = null)
    {
        // exec of a directory fails with an errno .NET reports as "Success".
        if (Directory.Exists(interpreter))
        {
            throw new PythonStartupException($"cannot run Python interpreter '{interpreter}': it is a directory");
        }
        var start = new ProcessStartInfo(interpreter)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? "",
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(Probe);
        string output;
        string error;
        int exitCode;
        try
        {
            using Process process = Process.Start(start) ?? throw new PythonStartupException($"cannot run Python interpreter '{interpreter}'");
            Task<string> errorTask = process.StandardError.ReadToEndAsync();
            output = process.StandardOutput.ReadToEnd();
            error = errorTask.GetAwaiter().GetResult();
            if (!process.WaitForExit(30_000))
            {
                process.Kill(entireProcessTree: true);
                throw new PythonStartupException($"Python interpreter '{interpreter}' did not answer within 30 s");
            }
            exitCode = process.ExitCode;
        }
        catch (Win32Exception e)
        {
            // The message alone would be resource keys (UseSystemResourceKeys); strerror says it in words.
            throw new PythonStartupException(
                $"cannot run Python interpreter '{interpreter}': {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(e.NativeErrorCode)}");
        }
        return Parse(interpreter, output, error, exitCode);
    }

    /// <summary>
    /// The facts in the probe's own line format, so that the master, which asks the interpreter once, can hand
    /// them to every worker it starts instead of each worker running the interpreter again.
    /// </summary>
    public string ToProbeText()
    {
        var text = new System.Text.StringBuilder();
        text.Append("executable=").Append(Executable).Append('\n');
        text.Append("version=").Append(Version).Append('\n');
        text.Append("prefix=").Append(Prefix).Append('\n');
        text.Append("exec_prefix=").Append(ExecPrefix).Append('\n');
        text.Append("base_prefix=").Append(BasePrefix).Append('\n');
        text.Append("library=").Append(SharedLibrary ?? "").Append('\n');
        foreach (string path in SysPath)
        {
            text.Append("path=").Append(path).Append('\n');
        }
        return text.ToString();
    }

    public static PythonInstallation FromProbeText(string interpreter, string text) => Parse(interpreter, text, "", 0);

    private static PythonInstallation Parse(string interpreter, string output, string error, int exitCode)
    {
        string? executable = null, version = null, prefix = null, execPrefix = null, basePrefix = null, library = null;
        var sysPath = new List<string>();
        foreach (string line in output.Split('\n'))
        {
            int eq = line.IndexOf('=', StringComparison.Ordinal);
            if (eq < 0)
            {
                continue;
            }
            string value = line[(eq + 1)..];
            switch (line[..eq])
            {
                case "executable": executable = value; break;
                case "version": version = value; break;
                case "prefix": prefix = value; break;
                case "exec_prefix": execPrefix = value; break;
                case "base_prefix": basePrefix = value; break;
                case "library": library = value; break;
                case "path": sysPath.Add(value); break;
            }
        }
        if (exitCode != 0 || executable is null || version is null || prefix is null || execPrefix is null || basePrefix is null)
        {
            // A traceback's last line names the error; any other message (a pyenv shim's) is read whole, on one line.
            string detail = error.Contains("Traceback (most recent call last)", StringComparison.Ordinal) ? error.Trim().Split('\n')[^1] : string.Join(' ', error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            throw new PythonStartupException(
                $"'{interpreter}' is not a usable Python interpreter (exit code {exitCode}{(detail.Length > 0 ? ": " + detail : "")})");
        }
        if (!System.Version.TryParse(version, out System.Version? parsed) || parsed < new System.Version(3, 9))
        {
            throw new PythonStartupException($"'{interpreter}' is Python {version}; Osprey needs CPython 3.9 or newer");
        }
        return new PythonInstallation(interpreter, executable, version, prefix, execPrefix, basePrefix, sysPath,
            string.IsNullOrEmpty(library) ? null : library);
    }
}
