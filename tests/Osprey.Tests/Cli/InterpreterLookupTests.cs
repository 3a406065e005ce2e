using Osprey.Python;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Cli;

/// <summary>
/// Without --python, <c>python3</c> is the first one on PATH, found as execvp finds it: a <c>./python3</c> in the
/// directory osprey is started from (a checkout, a directory a deploy user can write to; the master often runs
/// as root) must not run unless PATH itself names the current directory.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class InterpreterLookupTests : IDisposable
{
    private readonly TempDir _dir = TempDir.Create("osprey-lookup-");

    public void Dispose() => _dir.Dispose();

    private string Marker => Path.Combine(_dir.Path, "fake-python3-ran");

    /// <summary>An executable python3 in the directory that leaves a marker file when it runs.</summary>
    private string PlantFakePython()
    {
        string fake = _dir.Write("python3", $"#!/bin/sh\necho ran > '{Marker}'\necho './python3 in the working directory was run' >&2\nexit 1\n");
        File.SetUnixFileMode(fake, (UnixFileMode)0x1ED); // 0755
        return fake;
    }

    private static Dictionary<string, string?> Path_(string value) => new() { ["PATH"] = value };

    [Fact]
    public async Task Check_config_and_the_config_file_reader_do_not_run_python3_from_the_working_directory()
    {
        PlantFakePython();
        // The reader runs the interpreter too, for ./gunicorn.conf.py.
        _dir.Write("gunicorn.conf.py", "workers = 2\n");

        ProcessResult result = await RunAsync(_dir.Path, "/usr/bin:/bin", "--check-config", "--chdir", RepoPaths.Apps, "workers_app:app");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.False(File.Exists(Marker), "./python3 was run: " + result);
    }

    [Fact]
    public async Task An_empty_path_entry_names_the_current_directory_as_execvp_reads_it()
    {
        PlantFakePython();

        ProcessResult result = await RunAsync(_dir.Path, ":/usr/bin:/bin", "--check-config", "--chdir", RepoPaths.Apps, "workers_app:app");

        Assert.Equal(1, result.ExitCode);
        Assert.True(File.Exists(Marker), result.ToString());
    }

    [Fact]
    public async Task No_python3_on_path_is_one_line()
    {
        PlantFakePython();

        ProcessResult result = await RunAsync(_dir.Path, "/nonexistent", "--check-config", "--chdir", RepoPaths.Apps, "workers_app:app");

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("osprey: error: 'python3' was not found on PATH (name the interpreter with --python)\n", result.Stderr);
        Assert.False(File.Exists(Marker));
    }

    [Fact]
    public async Task A_directory_given_as_the_interpreter_is_named_as_one()
    {
        ProcessResult result = await RunAsync(_dir.Path, "/usr/bin:/bin", "--check-config", "--python", _dir.Path, "--chdir", RepoPaths.Apps, "workers_app:app");

        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"osprey: error: cannot run Python interpreter '{_dir.Path}': it is a directory\n", result.Stderr);
    }

    [Fact]
    public void Path_search_takes_the_first_executable_file_and_skips_the_rest()
    {
        string first = Path.Combine(_dir.Path, "a");
        string second = Path.Combine(_dir.Path, "b");
        Directory.CreateDirectory(first);
        Directory.CreateDirectory(second);
        // Not executable, then a directory of the name: both skipped, as execvp skips them.
        _dir.Write("a/tool", "#!/bin/sh\n");
        Directory.CreateDirectory(Path.Combine(second, "tool"));
        string third = _dir.Write("c/tool", "#!/bin/sh\n");
        File.SetUnixFileMode(third, (UnixFileMode)0x1ED);

        Assert.Equal(third, PythonInstallation.FindOnPath("tool", $"{first}:{second}:{Path.Combine(_dir.Path, "c")}"));
        Assert.Null(PythonInstallation.FindOnPath("tool", $"{first}:{second}"));
        Assert.Equal("/bin/sh", PythonInstallation.FindOnPath("sh", null));
    }

    [Fact]
    public void A_bare_python_name_is_resolved_to_a_path_and_a_relative_one_made_absolute()
    {
        Assert.True(Path.IsPathRooted(PythonInstallation.ChooseInterpreter("python3")));
        Assert.Equal(Path.GetFullPath("venv/bin/python"), PythonInstallation.ChooseInterpreter("venv/bin/python"));
        Assert.Equal("/usr/bin/python3", PythonInstallation.ChooseInterpreter("/usr/bin/python3"));
    }

    /// <summary>Runs the osprey command (no --python) in <paramref name="directory"/> with PATH set to <paramref name="path"/>.</summary>
    private static Task<ProcessResult> RunAsync(string directory, string path, params string[] args) =>
        OspreyServer.RunToCompletionAsync(args, TimeSpan.FromSeconds(60), Path_(path), workingDirectory: directory);
}
