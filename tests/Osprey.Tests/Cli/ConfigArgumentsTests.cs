using System.Net;
using System.Text.Json;
using Osprey.Cli;

namespace Osprey.Tests.Cli;

/// <summary>
/// gunicorn configuration settings as options (ConfigFile.Translate), their order against the command
/// line, and the environment defaults gunicorn reads (PORT, WEB_CONCURRENCY). Running real files:
/// Integration/ConfigFileTests.
/// </summary>
public sealed class ConfigArgumentsTests
{
    private static IPAddress[] NoDns(string host) => throw new InvalidOperationException("no DNS in these tests");

    private static ConfigArguments Translate(string json)
    {
        using var document = JsonDocument.Parse(json);
        var config = ConfigFile.Translate("conf.py", document.RootElement, out var error);
        Assert.True(config is not null, error);
        return config;
    }

    private static ParseOutcome Parse(string[] args, ConfigArguments? config = null, Dictionary<string, string>? environment = null) =>
        CommandLine.Parse(args, NoDns, name => environment?.GetValueOrDefault(name), config);

    private static OspreyOptions Ok(string[] args, ConfigArguments? config = null, Dictionary<string, string>? environment = null) =>
        Assert.IsType<ParseOutcome.Run>(Parse(args, config, environment)).Options;

    [Fact]
    public void Settings_become_the_options_of_the_same_meaning()
    {
        var config = Translate("""
            {"bind": ["0.0.0.0:80", "unix:/run/app.sock"], "workers": 4, "threads": 2, "timeout": 60,
             "graceful_timeout": 10, "keepalive": 5, "max_requests": 100, "max_requests_jitter": 10,
             "worker_connections": 500, "backlog": 64, "umask": 18, "loglevel": "debug", "accesslog": "-",
             "errorlog": "/tmp/err.log", "pidfile": "/tmp/app.pid", "proc_name": "shop", "raw_env": ["A=1", "B=2"],
             "forwarded_allow_ips": ["10.0.0.1", "10.0.0.2"], "proxy_protocol": true, "preload_app": true,
             "reload": "yes", "limit_request_line": 100, "limit_request_fields": 10, "limit_request_field_size": 50,
             "pythonpath": "/srv/lib,/srv/extra", "wsgi_app": "shop.wsgi:application", "accesslog_unused": 1,
             "access_log_format": "%(h)s %(D)s", "user": "www-data", "group": 33, "daemon": true}
            """);

        var o = Ok([], config);

        Assert.Equal(["0.0.0.0:80", "unix:/run/app.sock"], o.Binds.Select(b => b.Original));
        Assert.Equal((4, 2, 60, 10, 5), (o.Workers, o.Threads, o.Timeout, o.GracefulTimeout, o.KeepAlive));
        Assert.Equal((100, 10, 500, 64, 18), (o.MaxRequests, o.MaxRequestsJitter, o.MaxConnections, o.Backlog, o.Umask));
        Assert.Equal((Osprey.Cli.LogLevel.Debug, "-", "/tmp/err.log", "/tmp/app.pid", "shop"), (o.LogLevel, o.AccessLog, o.ErrorLog, o.PidFile, o.Name));
        Assert.Equal(["A=1", "B=2"], o.Environment.Select(e => $"{e.Key}={e.Value}"));
        Assert.Equal("10.0.0.1,10.0.0.2", o.ForwardedAllowIps.Text);
        Assert.True(o.ProxyProtocol && o.Preload && o.Reload);
        Assert.Equal((100, 10, 50), (o.LimitRequestLine, o.LimitRequestFields, o.LimitRequestFieldSize));
        Assert.Equal(["/srv/lib", "/srv/extra"], o.PythonPath);
        Assert.Equal(("shop.wsgi", "application"), (o.AppModule, o.AppAttribute));
        Assert.Equal("%(h)s %(D)s", o.AccessLogFormat.Text);
        Assert.Equal(("www-data", "33"), (o.User, o.Group));
        Assert.True(o.Daemon);
        Assert.Empty(config.Warnings);
    }

    [Fact]
    public void The_command_line_wins_and_replaces_lists_rather_than_adding_to_them()
    {
        var config = Translate("""{"bind": ["0.0.0.0:80", "0.0.0.0:81"], "raw_env": ["A=1"], "workers": 4, "wsgi_app": "file:app"}""");

        var o = Ok(["-b", "127.0.0.1:9000", "--workers", "2", "cli:app"], config);

        Assert.Equal(["127.0.0.1:9000"], o.Binds.Select(b => b.Original));
        Assert.Equal(["A=1"], o.Environment.Select(e => $"{e.Key}={e.Value}"));
        Assert.Equal(2, o.Workers);
        Assert.Equal("cli", o.AppModule);
    }

    [Fact]
    public void The_file_overrides_the_environment_defaults_and_the_command_line_overrides_both()
    {
        var environment = new Dictionary<string, string> { ["WEB_CONCURRENCY"] = "3", ["FORWARDED_ALLOW_IPS"] = "10.9.9.9" };
        var config = Translate("""{"workers": 5, "forwarded_allow_ips": "10.1.1.1"}""");

        Assert.Equal(3, Ok(["app"], environment: environment).Workers);
        Assert.Equal("10.9.9.9", Ok(["app"], environment: environment).ForwardedAllowIps.Text);
        Assert.Equal(5, Ok(["app"], config, environment).Workers);
        Assert.Equal("10.1.1.1", Ok(["app"], config, environment).ForwardedAllowIps.Text);
        Assert.Equal(7, Ok(["-w", "7", "app"], config, environment).Workers);
    }

    [Fact]
    public void GUNICORN_CMD_ARGS_sits_between_the_file_and_the_command_line()
    {
        var config = Translate("""{"workers": 5, "timeout": 10, "bind": "0.0.0.0:80"}""");
        var environment = new Dictionary<string, string>
        {
            ["GUNICORN_CMD_ARGS"] = """--workers=3 -b 127.0.0.1:81 --name 'my shop' --access-logformat "%(h)s \"%(r)s\"" """,
        };

        var fromEnvironment = Ok(["app"], config, environment);
        var overridden = Ok(["-w", "7", "-b", "127.0.0.1:82", "app"], config, environment);

        Assert.Equal((3, 10, "my shop"), (fromEnvironment.Workers, fromEnvironment.Timeout, fromEnvironment.Name));
        Assert.Equal("%(h)s \"%(r)s\"", fromEnvironment.AccessLogFormat.Text);
        Assert.Equal(["127.0.0.1:81"], fromEnvironment.Binds.Select(b => b.Original));
        Assert.Equal(7, overridden.Workers);
        Assert.Equal(["127.0.0.1:82"], overridden.Binds.Select(b => b.Original));
    }

    [Theory]
    [InlineData("--workers 'x", "GUNICORN_CMD_ARGS (environment variable): unterminated quote")]
    [InlineData("--workers none", "GUNICORN_CMD_ARGS (environment variable): --workers: 'none' is not a positive integer")]
    public void Bad_GUNICORN_CMD_ARGS_are_one_line_naming_the_variable(string value, string message)
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["app"], environment: new() { ["GUNICORN_CMD_ARGS"] = value }));
        Assert.Equal(message, error.Message);
    }

    [Theory]
    [InlineData("a b  c", new[] { "a", "b", "c" })]
    [InlineData("""'a b' "c d" e\ f""", new[] { "a b", "c d", "e f" })]
    [InlineData("""x'y'"z" "\"q\\" '\n'""", new[] { "xyz", "\"q\\", "\\n" })]
    [InlineData("  ", new string[0])]
    public void Shell_words_split_as_shlex_does(string text, string[] expected)
    {
        Assert.Equal(expected, CommandLine.SplitShellWords(text));
    }

    [Fact]
    public void PORT_makes_the_default_bind_all_interfaces_on_that_port()
    {
        var environment = new Dictionary<string, string> { ["PORT"] = "5000" };

        Assert.Equal(["0.0.0.0:5000"], Ok(["app"], environment: environment).Binds.Select(b => b.Original));
        Assert.Equal(["127.0.0.1:7000"], Ok(["-b", "127.0.0.1:7000", "app"], environment: environment).Binds.Select(b => b.Original));
        Assert.Equal(["127.0.0.1:8000"], Ok(["app"]).Binds.Select(b => b.Original));
    }

    [Fact]
    public void SCRIPT_NAME_mounts_the_application_below_the_root_as_in_gunicorn()
    {
        var environment = new Dictionary<string, string> { ["SCRIPT_NAME"] = "/shop/" };

        Assert.Equal("/shop", Ok(["app"], environment: environment).RootPath);
        // -e puts it in the workers' environment, where gunicorn reads it too.
        Assert.Equal("/store", Ok(["-e", "SCRIPT_NAME=/store", "app"], environment: environment).RootPath);
        Assert.Equal("/admin", Ok(["-e", "SCRIPT_NAME=/store", "--root-path", "/admin", "app"], environment: environment).RootPath);
        Assert.Equal("", Ok(["--root-path", "", "app"], environment: environment).RootPath);
        Assert.Equal("", Ok(["app"]).RootPath);
    }

    [Theory]
    [InlineData("SCRIPT_NAME", "shop", "SCRIPT_NAME (environment variable): 'shop' must start with '/'")]
    [InlineData("PORT", "http", "PORT (environment variable): 'http' is not a valid port number")]
    [InlineData("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY (environment variable): '0' is not a positive integer")]
    public void Bad_environment_defaults_are_one_clear_line(string name, string value, string message)
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["app"], environment: new() { [name] = value }));
        Assert.StartsWith(message, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("pidfile", "--pid")]
    [InlineData("chdir", "--chdir")]
    [InlineData("certfile", "--certfile")]
    [InlineData("reload_extra_files", "--reload-extra-file")]
    public void A_path_no_file_can_have_is_one_line(string setting, string option)
    {
        // A Python string can hold a NUL; no path can.
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["app"], Translate($$"""{"{{setting}}": "a\u0000b"}""")));
        Assert.Equal($"config file 'conf.py': {option}: invalid path 'a\\0b'", error.Message);
    }

    [Fact]
    public void Errors_in_the_file_name_the_file()
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["app"], Translate("""{"timeout": "soon"}""")));
        Assert.Equal("config file 'conf.py': --timeout: 'soon' is not a non-negative integer", error.Message);
    }

    [Fact]
    public void Hooks_and_unsupported_settings_are_warnings_and_other_names_are_the_files_own()
    {
        var config = Translate("""
            {"ssl_context": {"osprey-callable": true}, "helper": {"osprey-callable": true}, "daemon": false,
             "reload": false, "user": null, "syslog": true, "logconfig": "log.ini", "sendfile": null,
             "worker_class": null, "my_setting": 3}
            """);

        Assert.Empty(config.Arguments);
        Assert.Equal(
            [
                "conf.py: not supported by Osprey, ignored: syslog, logconfig",
                "conf.py: server hooks not run by Osprey: ssl_context",
            ],
            config.Warnings);
        Assert.Null(config.Hooks);
        Assert.Null(config.MasterHooks);
    }

    [Fact]
    public void Gunicorn_settings_for_how_workers_run_become_their_options()
    {
        string tmp = Path.GetTempPath().TrimEnd('/');
        var config = Translate($$"""
            {"worker_class": "gthread", "sendfile": false, "capture_output": true, "reuse_port": "yes",
             "enable_stdio_inheritance": true, "initgroups": true, "worker_tmp_dir": "{{tmp}}", "reload_engine": "inotify",
             "disable_redirect_access_to_syslog": true}
            """);
        OspreyOptions options = Ok(["app"], config);

        Assert.Empty(config.Warnings);
        Assert.Equal("gthread", options.WorkerClass);
        Assert.False(options.Sendfile);
        Assert.True(options.CaptureOutput);
        Assert.True(options.ReusePort);
        Assert.True(options.EnableStdioInheritance);
        Assert.True(options.Initgroups);
        Assert.Equal(tmp, options.WorkerTmpDir);
        Assert.Equal("inotify", options.ReloadEngine);
        Assert.Null(options.ProxyAllowFrom);
        Assert.Equal("10.0.0.1,10.0.0.2", Ok(["app"], Translate("""{"proxy_allow_ips": ["10.0.0.1", "10.0.0.2"]}""")).ProxyAllowFrom?.Text);

        // gunicorn's default for sendfile is None: sendfile where it can be used.
        Assert.True(Ok(["app"], Translate("""{"sendfile": true}""")).Sendfile);
    }

    [Fact]
    public void An_asgi_worker_class_is_an_error_naming_the_file()
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["app"], Translate("""{"worker_class": "uvicorn.workers.UvicornWorker"}""")));

        Assert.Equal(
            "config file 'conf.py': --worker-class: 'uvicorn.workers.UvicornWorker' serves ASGI applications; Osprey serves WSGI applications only",
            error.Message);
        Assert.Equal(1, error.ExitCode);
    }

    [Fact]
    public void Statsd_settings_become_their_options()
    {
        var config = Translate("""{"statsd_host": "metrics:8125", "statsd_prefix": "shop", "dogstatsd_tags": "env:prod", "syslog": false}""");
        var options = Assert.IsType<ParseOutcome.Run>(Parse(["app"], config)).Options;

        Assert.Empty(config.Warnings);
        Assert.Equal("metrics:8125", options.StatsdHost);
        Assert.Equal("shop", options.StatsdPrefix);
        Assert.Equal("env:prod", options.DogstatsdTags);
    }

    [Fact]
    public void Master_hooks_go_to_the_masters_hook_process_with_the_files_text()
    {
        var config = Translate("""
            {"when_ready": {"osprey-callable": true}, "child_exit": {"osprey-callable": true}, "osprey source": "d2hlbg=="}
            """);

        Assert.Empty(config.Warnings);
        Assert.Null(config.Hooks);
        Assert.Equal(new HookSource("conf.py", "d2hlbg=="), config.MasterHooks);
    }

    [Theory]
    [InlineData("post_fork")]
    [InlineData("worker_int")]
    [InlineData("worker_abort")]
    public void Worker_hooks_are_handed_to_the_workers_with_the_files_text(string hook)
    {
        var config = Translate($$"""
            {"{{hook}}": {"osprey-callable": true}, "osprey source": "cG9zdF9mb3Jr"}
            """);

        Assert.Empty(config.Warnings);
        Assert.Empty(config.Arguments);
        Assert.Equal(new HookSource("conf.py", "cG9zdF9mb3Jr"), config.Hooks);
        Assert.Null(config.MasterHooks);
        Assert.Equal(config.Hooks, ConfigFile.HooksFromVariable(ConfigFile.ToHooksVariable(config.Hooks!)));
        Assert.Null(ConfigFile.HooksFromVariable(null));
    }

    [Fact]
    public void Options_alone_can_be_read_before_the_file_that_names_the_app()
    {
        var early = Assert.IsType<ParseOutcome.Run>(CommandLine.Parse(["-c", "conf.py", "--keyfile", "k.pem"], NoDns, requireApp: false)).Options;
        Assert.Equal("conf.py", early.Config);

        var error = Assert.IsType<ParseOutcome.Error>(Parse([]));
        Assert.Contains("no application given", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Arguments_reach_workers_intact()
    {
        string[] arguments = ["--bind=0.0.0.0:80", "--env=QUOTE=\"x\" \\ y", "app:make('ü')"];
        Assert.Equal(arguments, ConfigFile.FromWorkerVariable(ConfigFile.ToWorkerVariable(arguments)));
        Assert.Null(ConfigFile.FromWorkerVariable(null));
    }
}
