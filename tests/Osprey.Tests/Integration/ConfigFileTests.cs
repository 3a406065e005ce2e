using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Workers;

namespace Osprey.Tests.Integration;

/// <summary>
/// gunicorn's configuration file, run by the real interpreter: <c>-c FILE</c>, <c>./gunicorn.conf.py</c>
/// by default, the command line overriding it, and what Osprey cannot do said in the log.
/// </summary>
public sealed class ConfigFileTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-config-");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Settings_from_the_file_apply_and_the_command_line_overrides_them()
    {
        // bind is overridden by the harness's -b (the file's port is never listened on); threads by --threads.
        var config = _dir.Write("prod.conf.py", """
            import multiprocessing
            wsgi_app = "config_app:app"
            bind = ["127.0.0.1:1"]
            workers = 1 + 1
            threads = 8
            raw_env = ["OSPREY_CONFIG_TEST=from-config"]
            max_requests = 1000
            helper_of_my_own = {"not": "a setting"}
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "", Args = ["-c", config, "--threads", "1"],
        });

        var seen = await RawHttp.GetJsonAsync(server);
        var workers = await ProcessTools.WaitForChildrenAsync(server.ProcessId, 2, Eventually);

        Assert.Equal(2, workers.Count);
        Assert.Equal("from-config", seen.GetProperty("raw_env").GetString());
        Assert.True(seen.GetProperty("multiprocess").GetBoolean());
        Assert.False(seen.GetProperty("multithread").GetBoolean());
        Assert.False(seen.GetProperty("config_arguments_leaked").GetBoolean());
        Assert.Contains($"Configuration read from {config}", server.ErrorLog, StringComparison.Ordinal);
        Assert.DoesNotContain("WARNING", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Gunicorn_conf_py_in_the_working_directory_is_read_without_being_named()
    {
        _dir.Write("gunicorn.conf.py", """
            raw_env = ["OSPREY_CONFIG_TEST=default-file"]
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "config_app:app", WorkingDirectory = _dir.Path,
        });

        var seen = await RawHttp.GetJsonAsync(server);

        Assert.Equal("default-file", seen.GetProperty("raw_env").GetString());
        Assert.Contains("Configuration read from gunicorn.conf.py", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Hooks_and_settings_osprey_cannot_honour_are_named_in_one_warning_each()
    {
        var config = _dir.Write("hooks.conf.py", """
            def post_fork(server, worker):
                pass

            def when_ready(server):
                pass

            def ssl_context(config, default_ssl_context_factory):
                return default_ssl_context_factory()

            syslog = True
            logconfig = "logging.ini"
            reload = False
            worker_class = "gevent"
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "config_app:app", Args = ["--config", config],
        });

        await RawHttp.GetJsonAsync(server);
        var log = server.ErrorLog;

        // post_fork and when_ready are run, so they are not named.
        Assert.Contains("server hooks not run by Osprey: ssl_context\n", log, StringComparison.Ordinal);
        // reload = False asks for nothing, so it is not named.
        Assert.Contains("not supported by Osprey, ignored: syslog, logconfig\n", log, StringComparison.Ordinal);
        Assert.Contains("--worker-class gevent is not a worker Osprey has", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_file_that_raises_shows_its_traceback_and_one_error_line()
    {
        var config = _dir.Write("broken.conf.py", """
            workers = int("four")
            """);

        var result = await OspreyServer.RunToCompletionAsync(
            ["-c", config, "-b", $"127.0.0.1:{OspreyServer.GetFreePort()}", "--python", RepoPaths.SystemPython, "config_app:app"],
            TimeSpan.FromSeconds(30));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("Traceback (most recent call last):", result.Stderr, StringComparison.Ordinal);
        Assert.Contains($"osprey: error: config file '{config}' failed: ValueError: invalid literal for int()", result.Stderr, StringComparison.Ordinal);
        TestSupport.AssertNoDotNetStackTrace(result.Stderr);
    }

    [Theory]
    [InlineData("workers = 'many'\n", "--workers: 'many' is not a positive integer")]
    [InlineData("bind = ['127.0.0.1:99999']\n", "'99999' is not a valid port number")]
    [InlineData("preload_app = 'maybe'\n", "preload_app: expected True or False")]
    public async Task A_bad_value_in_the_file_is_one_line_naming_the_file(string text, string words)
    {
        var config = _dir.Write("bad.conf.py", text);

        var result = await OspreyServer.RunToCompletionAsync(
            ["-c", config, "--python", RepoPaths.SystemPython, "config_app:app"], TimeSpan.FromSeconds(30));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"osprey: error: config file '{config}': ", result.Stderr, StringComparison.Ordinal);
        Assert.Contains(words, result.Stderr, StringComparison.Ordinal);
        TestSupport.AssertNoDotNetStackTrace(result.Stderr);
    }

    [Fact]
    public async Task A_python_module_named_with_python_colon_is_imported_for_its_settings()
    {
        Directory.CreateDirectory(Path.Combine(_dir.Path, "deploy"));
        _dir.Write(Path.Combine("deploy", "__init__.py"), "");
        _dir.Write(Path.Combine("deploy", "osprey_settings.py"), """
            from os import path
            raw_env = ["OSPREY_CONFIG_TEST=from-module"]
            workers = 2
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "config_app:app", Args = ["-c", "python:deploy.osprey_settings"], WorkingDirectory = _dir.Path,
        });

        var seen = await RawHttp.GetJsonAsync(server);

        Assert.Equal("from-module", seen.GetProperty("raw_env").GetString());
        Assert.Equal(2, (await ProcessTools.WaitForChildrenAsync(server.ProcessId, 2, Eventually)).Count);
        Assert.Contains("Configuration read from python:deploy.osprey_settings", server.ErrorLog, StringComparison.Ordinal);
        Assert.DoesNotContain("WARNING", server.ErrorLog, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("python:no_such_module_here", "ModuleNotFoundError: No module named 'no_such_module_here'")]
    [InlineData("python:not a module", "'python:not a module' does not name a module")]
    [InlineData("python:", "'python:' does not name a module")]
    public async Task A_python_module_that_cannot_be_imported_is_one_line(string config, string words)
    {
        var result = await OspreyServer.RunToCompletionAsync(
            ["-c", config, "--python", RepoPaths.SystemPython, "config_app:app"], TimeSpan.FromSeconds(30));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains(words, result.Stderr, StringComparison.Ordinal);
        Assert.Contains("osprey: error: ", result.Stderr, StringComparison.Ordinal);
        TestSupport.AssertNoDotNetStackTrace(result.Stderr);
    }

    [Fact]
    public async Task A_missing_file_is_one_line()
    {
        var result = await OspreyServer.RunToCompletionAsync(
            ["-c", Path.Combine(_dir.Path, "absent.py"), "--python", RepoPaths.SystemPython, "config_app:app"], TimeSpan.FromSeconds(30));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--config: file ", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("does not exist", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WEB_CONCURRENCY_sets_the_default_number_of_workers()
    {
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "config_app:app",
            Environment = new Dictionary<string, string?> { ["WEB_CONCURRENCY"] = "3" },
        });

        await RawHttp.GetJsonAsync(server);

        Assert.Equal(3, (await ProcessTools.WaitForChildrenAsync(server.ProcessId, 3, Eventually)).Count);
    }
}
