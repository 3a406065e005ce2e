using Osprey.Cli;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Cli;

/// <summary>
/// Reading a configuration file with the real interpreter: what the file prints must not spoil the
/// settings (gunicorn runs it in its own process, where print() is harmless), and <c>-c file:PATH</c>
/// is gunicorn's documented spelling of a path.
/// </summary>
public sealed class ConfigFileReadingTests : IDisposable
{
    private readonly TempDir _dir = TempDir.Create("osprey-configread-");

    public void Dispose() => _dir.Dispose();

    private static ConfigArguments Load(string path, out string? output)
    {
        ConfigArguments? config = ConfigFile.Load(path, RepoPaths.SystemPython, out string? error, out output);
        Assert.True(config is not null, $"{error}\n{output}");
        return config;
    }

    [Fact]
    public void A_file_that_prints_is_read_and_its_output_is_kept_apart()
    {
        string path = _dir.Write("print.conf.py", """
            import os, subprocess, sys
            print("loading gunicorn config")
            os.write(1, b"written to fd 1\n")
            subprocess.run(["echo", "from a subprocess"], check=True)
            sys.stdout.write("no newline at the end")
            workers = 2
            bind = "127.0.0.1:9314"
            """);

        ConfigArguments config = Load(path, out string? output);

        Assert.Contains("--workers=2", config.Arguments);
        Assert.Contains("--bind=127.0.0.1:9314", config.Arguments);
        Assert.NotNull(output);
        Assert.Contains("loading gunicorn config", output, StringComparison.Ordinal);
        Assert.Contains("written to fd 1", output, StringComparison.Ordinal);
        Assert.Contains("from a subprocess", output, StringComparison.Ordinal);
        Assert.Contains("no newline at the end", output, StringComparison.Ordinal);
    }

    /// <summary>Runs the osprey command in <paramref name="directory"/> until it exits.</summary>
    internal static Task<ProcessResult> RunInAsync(string directory, params string[] args) =>
        OspreyServer.RunToCompletionAsync(args, TimeSpan.FromSeconds(60), workingDirectory: directory);

    [Fact]
    public async Task Check_config_passes_with_a_file_that_prints()
    {
        _dir.Write("print.py", """
            print("loading gunicorn config")
            workers = 2
            bind = "127.0.0.1:9314"
            """);

        ProcessResult result = await RunInAsync(_dir.Path,
            "--check-config", "--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps, "-c", "print.py", "workers_app:app");

        Assert.True(result.ExitCode == 0, result.ToString());
        // Once, though the check runs the command again inside the interpreter.
        Assert.Equal("loading gunicorn config\n", result.Stderr);
    }

    [Fact]
    public async Task A_settings_module_that_prints_on_import_is_read()
    {
        _dir.Write("noisy_settings.py", """
            print("importing settings")
            workers = 3
            """);

        // python:MODULE is imported as `python -c` imports: from the current directory.
        ProcessResult result = await RunInAsync(_dir.Path,
            "--print-config", "--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps, "-c", "python:noisy_settings", "workers_app:app");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("workers", result.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^workers\s*=\s*3$", result.Stdout);
        Assert.DoesNotContain("importing settings", result.Stdout, StringComparison.Ordinal);
        Assert.Contains("importing settings", result.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sys.exit(3)", 3)]
    [InlineData("sys.exit(0)", 0)]
    public async Task Sys_exit_in_the_file_is_the_commands_exit_code_as_in_gunicorn(string call, int expected)
    {
        _dir.Write("exits.py", $"import sys\n{call}\nworkers = 2\n");

        ProcessResult result = await RunInAsync(_dir.Path,
            "--check-config", "--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps, "-c", "exits.py", "workers_app:app");

        Assert.True(result.ExitCode == expected, result.ToString());
        Assert.Contains("exits.py", result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("could not be read", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_that_prints_and_then_fails_shows_both()
    {
        string path = _dir.Write("fails.conf.py", """
            print("about to fail")
            raise RuntimeError("config marker")
            """);

        Assert.Null(ConfigFile.Load(path, RepoPaths.SystemPython, out string? error, out string? output));

        Assert.Equal($"config file '{path}' failed: RuntimeError: config marker", error);
        Assert.Contains("about to fail", output, StringComparison.Ordinal);
        Assert.Contains("Traceback", output, StringComparison.Ordinal);
    }

    [Fact]
    public void File_prefix_names_a_path_as_in_gunicorn()
    {
        string path = _dir.Write("prefixed.conf.py", "workers = 4\n");

        ConfigArguments config = Load("file:" + path, out _);
        ParseOutcome outcome = ConfigFile.ReadOptions(
            ["-c", "file:" + path, "--python", RepoPaths.SystemPython, "app:app"], out ConfigArguments? read, out _);

        Assert.Equal(path, config.Path);
        Assert.Contains("--workers=4", config.Arguments);
        Assert.Equal(4, Assert.IsType<ParseOutcome.Run>(outcome).Options.Workers);
        Assert.Equal(path, read?.Path);
    }

    [Fact]
    public void File_prefix_of_a_missing_file_names_the_file()
    {
        string path = Path.Combine(_dir.Path, "absent.conf.py");

        Assert.Null(ConfigFile.Load("file:" + path, RepoPaths.SystemPython, out string? error, out _));

        Assert.Equal($"--config: file '{path}' does not exist", error);
    }

    [Fact]
    public void Upper_case_names_are_not_settings_as_in_gunicorn()
    {
        string path = _dir.Write("upper.conf.py", "WORKERS = 3\nTimeout = 5\nworkers = 2\n");

        ConfigArguments config = Load(path, out _);

        Assert.Equal(["--workers=2"], config.Arguments);
    }
}
