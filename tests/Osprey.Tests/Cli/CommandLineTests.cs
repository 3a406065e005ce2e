using System.Net;
using System.Net.Sockets;
using Osprey.Cli;

namespace Osprey.Tests.Cli;

public sealed class CommandLineTests
{
    // Stands in for DNS so the tests never touch the network.
    private static IPAddress[] FakeDns(string host) => host switch
    {
        "dual.test" => [IPAddress.Parse("2001:db8::1"), IPAddress.Parse("192.0.2.10")],
        "v6only.test" => [IPAddress.Parse("2001:db8::2")],
        "empty.test" => [],
        _ => throw new SocketException((int)SocketError.HostNotFound),
    };

    private static ParseOutcome Parse(params string[] args) => CommandLine.Parse(args, FakeDns);

    private static OspreyOptions Ok(params string[] args)
    {
        ParseOutcome outcome = Parse(args);
        var run = Assert.IsType<ParseOutcome.Run>(outcome);
        return run.Options;
    }

    private static string Err(params string[] args)
    {
        ParseOutcome outcome = Parse(args);
        var error = Assert.IsType<ParseOutcome.Error>(outcome);
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    private static BindAddress.Tcp SingleTcp(string bind)
    {
        OspreyOptions o = Ok("-b", bind, "app");
        return Assert.IsType<BindAddress.Tcp>(Assert.Single(o.Binds));
    }

    // ---- APP ----------------------------------------------------------------------------------------

    [Fact]
    public void App_module_only_defaults_attribute_to_application()
    {
        OspreyOptions o = Ok("myproject.wsgi");
        Assert.Equal("myproject.wsgi", o.App);
        Assert.Equal("myproject.wsgi", o.AppModule);
        Assert.Equal("application", o.AppAttribute);
        Assert.Null(o.FactoryArguments);
    }

    [Fact]
    public void App_module_and_attribute()
    {
        OspreyOptions o = Ok("pkg.sub.web:app");
        Assert.Equal("pkg.sub.web:app", o.App);
        Assert.Equal("pkg.sub.web", o.AppModule);
        Assert.Equal("app", o.AppAttribute);
        Assert.Null(o.FactoryArguments);
    }

    [Fact]
    public void App_factory_without_arguments_has_empty_argument_text()
    {
        OspreyOptions o = Ok("app:create_app()");
        Assert.Equal("app", o.AppModule);
        Assert.Equal("create_app", o.AppAttribute);
        Assert.Equal("", o.FactoryArguments);
    }

    [Theory]
    [InlineData("app:factory('prod', 3, x=1)", "'prod', 3, x=1")]
    [InlineData("app:factory((1, 2), [3])", "(1, 2), [3]")]
    [InlineData("app:factory(')', \"(\")", "')', \"(\"")]
    [InlineData("app:factory('it\\'s)')", "'it\\'s)'")]
    [InlineData("app:factory('''a ' ) b''')", "'''a ' ) b'''")]
    [InlineData("app:factory('a:b')", "'a:b'")]
    public void App_factory_arguments_are_the_text_inside_the_outer_parentheses(string app, string expected)
    {
        OspreyOptions o = Ok(app);
        Assert.Equal("app", o.AppModule);
        Assert.Equal("factory", o.AppAttribute);
        Assert.Equal(expected, o.FactoryArguments);
    }

    [Theory]
    [InlineData("_private.mod:_app")]
    [InlineData("café.wsgi:app")]
    [InlineData("mod2:app_3")]
    public void App_accepts_python_identifiers(string app)
    {
        Assert.IsType<ParseOutcome.Run>(Parse(app));
    }

    [Theory]
    [InlineData(":app")]
    [InlineData("app:")]
    [InlineData("1app:x")]
    [InlineData("my-app:app")]
    [InlineData("pkg..mod:app")]
    [InlineData("pkg.:app")]
    [InlineData("app:1x")]
    [InlineData("app:a.b")]
    [InlineData("app:class")]
    [InlineData("app:None")]
    [InlineData("app:f(")]
    [InlineData("app:f(()")]
    [InlineData("app:f('x)")]
    [InlineData("app:f())")]
    [InlineData("app:f()x")]
    [InlineData("app:f()()")]
    [InlineData("app:f )")]
    [InlineData("app:(1)")]
    public void App_invalid_forms_are_errors_naming_the_app(string app)
    {
        string message = Err(app);
        Assert.StartsWith($"invalid application '{app}'", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_app_is_an_error()
    {
        Assert.Equal("no application given (usage: osprey [OPTIONS] MODULE:APP)", Err());
        Assert.Equal("no application given (usage: osprey [OPTIONS] MODULE:APP)", Err("-w", "2"));
    }

    [Fact]
    public void More_than_one_app_is_an_error()
    {
        Assert.Equal("unexpected argument 'other:app': only one APP may be given", Err("app", "other:app"));
    }

    [Fact]
    public void App_may_come_before_or_after_options()
    {
        Assert.Equal(3, Ok("app", "-w", "3").Workers);
        Assert.Equal(3, Ok("-w", "3", "app").Workers);
    }

    [Fact]
    public void Double_dash_ends_options()
    {
        Assert.Equal("app", Ok("-w", "2", "--", "app").AppModule);
        Assert.StartsWith("invalid application '--help'", Err("--", "--help"), StringComparison.Ordinal);
    }

    // ---- --bind -------------------------------------------------------------------------------------

    [Fact]
    public void Bind_defaults_to_loopback_port_8000()
    {
        var tcp = Assert.IsType<BindAddress.Tcp>(Assert.Single(Ok("app").Binds));
        Assert.Equal(IPAddress.Loopback, tcp.Address);
        Assert.Equal(8000, tcp.Port);
        Assert.Equal("127.0.0.1", tcp.Host);
        Assert.Equal("127.0.0.1:8000", tcp.Original);
    }

    [Theory]
    [InlineData("0.0.0.0:9000", "0.0.0.0", 9000, "0.0.0.0")]
    [InlineData("127.0.0.1", "127.0.0.1", 8000, "127.0.0.1")]
    [InlineData("192.168.1.20:0", "192.168.1.20", 0, "192.168.1.20")]
    [InlineData("10.0.0.1:65535", "10.0.0.1", 65535, "10.0.0.1")]
    [InlineData("localhost:5000", "127.0.0.1", 5000, "localhost")]
    [InlineData("localhost", "127.0.0.1", 8000, "localhost")]
    [InlineData("LocalHost:81", "127.0.0.1", 81, "LocalHost")]
    [InlineData("[::1]:8080", "::1", 8080, "::1")]
    [InlineData("[::]:80", "::", 80, "::")]
    [InlineData("[::1]", "::1", 8000, "::1")]
    [InlineData("tcp://127.0.0.1:81", "127.0.0.1", 81, "127.0.0.1")]
    [InlineData("dual.test:8001", "192.0.2.10", 8001, "dual.test")]
    [InlineData("v6only.test", "2001:db8::2", 8000, "v6only.test")]
    public void Bind_tcp_forms(string bind, string address, int port, string host)
    {
        BindAddress.Tcp tcp = SingleTcp(bind);
        Assert.Equal(IPAddress.Parse(address), tcp.Address);
        Assert.Equal(port, tcp.Port);
        Assert.Equal(host, tcp.Host);
        Assert.Equal(bind, tcp.Original);
    }

    [Theory]
    [InlineData("unix:/tmp/osprey.sock", "/tmp/osprey.sock")]
    [InlineData("unix:///tmp/osprey.sock", "/tmp/osprey.sock")]
    [InlineData("unix:relative.sock", "relative.sock")]
    public void Bind_unix_socket(string bind, string path)
    {
        var unix = Assert.IsType<BindAddress.Unix>(Assert.Single(Ok("--bind", bind, "app").Binds));
        // A relative path is in the directory the server runs in (--chdir's, else the current one).
        Assert.Equal(Path.GetFullPath(path), unix.Path);
        Assert.Equal(bind, unix.Original);
    }

    [Fact]
    public void Bind_file_descriptor()
    {
        var fd = Assert.IsType<BindAddress.FileDescriptor>(Assert.Single(Ok("--bind=fd://3", "app").Binds));
        Assert.Equal(3, fd.Fd);
        Assert.Equal("fd://3", fd.Original);
    }

    [Fact]
    public void Bind_is_repeatable_and_keeps_order()
    {
        OspreyOptions o = Ok("-b", "127.0.0.1:1", "--bind", "unix:/run/a.sock", "-b[::1]:2", "--bind=fd://4", "app");
        Assert.Equal(4, o.Binds.Count);
        Assert.Equal(1, Assert.IsType<BindAddress.Tcp>(o.Binds[0]).Port);
        Assert.Equal("/run/a.sock", Assert.IsType<BindAddress.Unix>(o.Binds[1]).Path);
        Assert.Equal(IPAddress.IPv6Loopback, Assert.IsType<BindAddress.Tcp>(o.Binds[2]).Address);
        Assert.Equal(4, Assert.IsType<BindAddress.FileDescriptor>(o.Binds[3]).Fd);
    }

    [Theory]
    [InlineData("127.0.0.1:65536")]
    [InlineData("127.0.0.1:-1")]
    [InlineData("127.0.0.1:http")]
    [InlineData("127.0.0.1:")]
    [InlineData(":")]
    [InlineData("[]:8000")]
    [InlineData("")]
    [InlineData("::1")]
    [InlineData("::1:8000")]
    [InlineData("[::1")]
    [InlineData("[::1]8000")]
    [InlineData("[::1]:x")]
    [InlineData("[1.2.3:4]:80")]
    [InlineData("8000")]
    [InlineData("256.0.0.1:80")]
    [InlineData("1.2.3:80")]
    [InlineData("unix:")]
    [InlineData("unix://")]
    [InlineData("fd://")]
    [InlineData("fd://x")]
    [InlineData("fd://-1")]
    [InlineData("nosuch.test:80")]
    [InlineData("empty.test:80")]
    public void Bind_invalid_forms_are_errors(string bind)
    {
        Assert.StartsWith($"invalid bind address '{bind}': ", Err("--bind=" + bind, "app"), StringComparison.Ordinal);
    }

    [Fact]
    public void Bind_resolution_failure_names_the_host()
    {
        Assert.StartsWith("invalid bind address 'nosuch.test:80': cannot resolve host 'nosuch.test'",
            Err("-b", "nosuch.test:80", "app"), StringComparison.Ordinal);
    }

    [Fact]
    public void Public_parse_handles_localhost_and_literals_without_dns()
    {
        var run = Assert.IsType<ParseOutcome.Run>(
            CommandLine.Parse(["-b", "localhost:9000", "-b", "[::1]:9001", "-b", "0.0.0.0:9002", "app"]));
        Assert.Equal(3, run.Options.Binds.Count);
        Assert.Equal(IPAddress.Loopback, Assert.IsType<BindAddress.Tcp>(run.Options.Binds[0]).Address);
    }

    // ---- option syntax ------------------------------------------------------------------------------

    [Theory]
    [InlineData("--workers", "4")]
    [InlineData("--workers=4")]
    [InlineData("-w", "4")]
    [InlineData("-w4")]
    [InlineData("-w=4")]
    [InlineData("--workers", "4", "--threads=4")]
    public void Option_value_syntaxes(params string[] option)
    {
        Assert.Equal(4, Ok([.. option, "app"]).Workers);
    }

    [Fact]
    public void A_prefix_of_several_options_is_ambiguous_as_in_gunicorn()
    {
        // gunicorn has --workers, --worker-class, --worker-connections and --worker-tmp-dir too.
        Assert.Equal("ambiguous option '--work' could match --workers, --worker-connections, --worker-class, --worker-tmp-dir",
            Err("--work", "4", "app"));
    }

    [Theory]
    [InlineData("--thr", "4")]
    [InlineData("--thr=4")]
    public void Unique_prefixes_of_long_options_are_accepted(params string[] option)
    {
        Assert.Equal(4, Ok([.. option, "app"]).Threads);
    }

    [Fact]
    public void Last_value_wins_for_single_valued_options()
    {
        Assert.Equal(3, Ok("-w", "2", "app", "--workers", "3").Workers);
    }

    [Fact]
    public void Unknown_long_option_is_an_error()
    {
        Assert.Equal("unrecognized option '--foo'", Err("--foo", "app"));
        Assert.Equal("unrecognized option '--foo'", Err("--foo=bar", "app"));
    }

    [Fact]
    public void Unknown_short_option_is_an_error()
    {
        Assert.Equal("unrecognized option '-x'", Err("-x", "app"));
        Assert.Equal("unrecognized option '-Z'", Err("app", "-Z"));
    }

    [Fact]
    public void Ambiguous_prefix_is_an_error()
    {
        string message = Err("--log", "debug", "app");
        Assert.StartsWith("ambiguous option '--log' could match ", message, StringComparison.Ordinal);
        Assert.Contains("--log-level", message, StringComparison.Ordinal);
        Assert.Contains("--log-file", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--bind")]
    [InlineData("-b")]
    public void Missing_value_at_end_is_an_error(string option)
    {
        Assert.Equal("option --bind requires a value", Err("app", option));
    }

    [Fact]
    public void Missing_value_before_another_option_is_an_error()
    {
        Assert.Equal("option --bind requires a value", Err("--bind", "--workers", "2", "app"));
        Assert.Equal("option --threads requires a value", Err("app", "--threads", "-w", "2"));
    }

    [Fact]
    public void Flag_with_value_is_an_error()
    {
        Assert.Equal("option --help does not take a value", Err("--help=yes"));
    }

    [Fact]
    public void Dash_alone_is_a_value()
    {
        OspreyOptions o = Ok("--access-logfile", "-", "--error-logfile", "-", "app");
        Assert.Equal("-", o.AccessLog);
        Assert.Equal("-", o.ErrorLog);
    }

    // ---- help and version ---------------------------------------------------------------------------

    [Theory]
    [InlineData("-h")]
    [InlineData("--help")]
    // "--he" is ambiguous since --header-timeout (as in gunicorn, with its --header-map).
    [InlineData("--hel")]
    [InlineData("app", "--help")]
    [InlineData("-hv")]
    [InlineData("--help", "--version")]
    public void Help(params string[] args)
    {
        var help = Assert.IsType<ParseOutcome.ShowHelp>(Parse(args));
        Assert.Equal(CommandLine.HelpText, help.Text);
    }

    [Theory]
    [InlineData("-v")]
    [InlineData("--version")]
    [InlineData("app", "-v")]
    [InlineData("--version", "--help")]
    public void Version(params string[] args)
    {
        var version = Assert.IsType<ParseOutcome.ShowVersion>(Parse(args));
        Assert.Equal("osprey (version 0.1.0)", version.Text);
    }

    [Fact]
    public void Help_text_reads_like_gunicorn()
    {
        string help = CommandLine.HelpText;
        Assert.StartsWith("usage: osprey [OPTIONS] [APP_MODULE]\n", help, StringComparison.Ordinal);
        Assert.Contains("$VIRTUAL_ENV/bin/python", help, StringComparison.Ordinal);
        Assert.Contains("python3 on PATH", help, StringComparison.Ordinal);
        foreach (string line in help.Split('\n'))
        {
            Assert.True(line.Length <= 100, $"help line longer than 100 columns: '{line}'");
            Assert.Equal(line.TrimEnd(), line);
        }
        string[] options =
        [
            "-b ADDRESS, --bind ADDRESS", "-w INT, --workers INT", "--threads", "--engine", "--python", "--chdir",
            "--pythonpath", "-e KEY=VALUE, --env", "--root-path", "--log-level", "--error-logfile", "--log-file",
            "--access-logfile", "-t INT, --timeout", "--graceful-timeout", "--keep-alive", "--backlog",
            "--limit-request-line", "--limit-request-fields", "--limit-request-field_size", "--limit-request-body",
            "--body-buffer-size", "-h, --help", "-v, --version",
        ];
        foreach (string option in options) Assert.Contains(option, help, StringComparison.Ordinal);
        Assert.Contains("[127.0.0.1:8000]", help, StringComparison.Ordinal);
        Assert.Contains("[2048]", help, StringComparison.Ordinal);
    }

    // ---- integers -----------------------------------------------------------------------------------

    [Fact]
    public void Integer_options_set_their_fields()
    {
        OspreyOptions o = Ok(
            "app", "-w", "3", "--threads", "8", "-t", "0", "--graceful-timeout", "5", "--keep-alive", "0",
            "--backlog", "64", "--limit-request-line", "8190", "--limit-request-fields", "32768",
            "--limit-request-field_size", "0", "--limit-request-body", "10000000000", "--body-buffer-size", "65536");
        Assert.Equal(3, o.Workers);
        Assert.Equal(8, o.Threads);
        Assert.Equal(0, o.Timeout);
        Assert.Equal(5, o.GracefulTimeout);
        Assert.Equal(0, o.KeepAlive);
        Assert.Equal(64, o.Backlog);
        Assert.Equal(8190, o.LimitRequestLine);
        Assert.Equal(32768, o.LimitRequestFields);
        Assert.Equal(0, o.LimitRequestFieldSize);
        Assert.Equal(10_000_000_000L, o.LimitRequestBody);
        Assert.Equal(65536, o.BodyBufferSize);
    }

    [Fact]
    public void Limit_request_field_size_accepts_both_spellings()
    {
        Assert.Equal(100, Ok("--limit-request-field_size", "100", "app").LimitRequestFieldSize);
        Assert.Equal(200, Ok("--limit-request-field-size=200", "app").LimitRequestFieldSize);
    }

    [Theory]
    [InlineData("--threads", "x", "--threads: 'x' is not a positive integer")]
    [InlineData("--threads", "0", "--threads: '0' is not a positive integer")]
    [InlineData("-w", "0", "--workers: '0' is not a positive integer")]
    [InlineData("--workers", "99999999999", "--workers: '99999999999' is not a positive integer")]
    [InlineData("--workers", "2.5", "--workers: '2.5' is not a positive integer")]
    [InlineData("-t", "-1", "--timeout: '-1' is not a non-negative integer")]
    [InlineData("--graceful-timeout", "soon", "--graceful-timeout: 'soon' is not a non-negative integer")]
    [InlineData("--keep-alive", "-5", "--keep-alive: '-5' is not a non-negative integer")]
    [InlineData("--backlog", "0", "--backlog: '0' is not a positive integer")]
    [InlineData("--limit-request-line", "8191", "--limit-request-line: '8191' is not an integer between 0 and 8190")]
    [InlineData("--limit-request-fields", "32769", "--limit-request-fields: '32769' is not an integer between 0 and 32768")]
    [InlineData("--limit-request-field-size", "-1", "--limit-request-field_size: '-1' is not a non-negative integer")]
    [InlineData("--limit-request-body", "-1", "--limit-request-body: '-1' is not a non-negative integer")]
    [InlineData("--body-buffer-size", "1M", "--body-buffer-size: '1M' is not a non-negative integer")]
    public void Bad_integers_are_errors_naming_option_and_value(string option, string value, string expected)
    {
        Assert.Equal(expected, Err(option, value, "app"));
    }

    // ---- choices ------------------------------------------------------------------------------------

    [Theory]
    [InlineData("auto", EngineKind.Auto)]
    [InlineData("kestrel", EngineKind.Kestrel)]
    [InlineData("osprey", EngineKind.Osprey)]
    [InlineData("Kestrel", EngineKind.Kestrel)]
    public void Engine_choices(string value, EngineKind expected)
    {
        Assert.Equal(expected, Ok("--engine", value, "app").Engine);
    }

    [Fact]
    public void Engine_invalid_choice_is_an_error()
    {
        Assert.Equal("--engine: invalid choice 'uvloop' (choose from auto, kestrel, osprey)", Err("--engine=uvloop", "app"));
    }

    [Theory]
    [InlineData("debug", LogLevel.Debug)]
    [InlineData("info", LogLevel.Info)]
    [InlineData("warning", LogLevel.Warning)]
    [InlineData("error", LogLevel.Error)]
    [InlineData("critical", LogLevel.Critical)]
    [InlineData("DEBUG", LogLevel.Debug)]
    [InlineData("Warning", LogLevel.Warning)]
    public void Log_level_choices_are_case_insensitive(string value, LogLevel expected)
    {
        Assert.Equal(expected, Ok("--log-level", value, "app").LogLevel);
    }

    [Fact]
    public void Log_level_invalid_choice_is_an_error()
    {
        Assert.StartsWith("--log-level: invalid choice 'warn'", Err("--log-level", "warn", "app"), StringComparison.Ordinal);
    }

    // ---- paths and strings --------------------------------------------------------------------------

    [Fact]
    public void Python_is_kept_as_given()
    {
        Assert.Equal("/opt/py/bin/python3.13", Ok("--python", "/opt/py/bin/python3.13", "app").Python);
        Assert.Equal("--python: value must not be empty", Err("--python=", "app"));
    }

    [Fact]
    public void Chdir_must_exist_and_becomes_absolute()
    {
        string temp = Path.GetTempPath();
        Assert.Equal(Path.GetFullPath(temp), Ok("--chdir", temp, "app").Chdir);
        Assert.Equal(Directory.GetCurrentDirectory(), Ok("--chdir", ".", "app").Chdir);

        string missing = Path.Combine(temp, "osprey-no-such-dir-" + Guid.NewGuid().ToString("N"));
        Assert.Equal($"--chdir: directory '{missing}' does not exist", Err("--chdir", missing, "app"));
    }

    [Fact]
    public void Pythonpath_is_repeatable_and_comma_separated()
    {
        OspreyOptions o = Ok("--pythonpath", "/a,/b", "app", "--pythonpath=src", "--pythonpath", "x,,y,");
        Assert.Equal(["/a", "/b", "src", "x", "y"], o.PythonPath);
    }

    [Fact]
    public void Env_is_repeatable_and_splits_at_the_first_equals()
    {
        OspreyOptions o = Ok("-e", "A=1", "--env", "B=x=y", "-eC=", "--env=D=4", "app");
        Assert.Equal(
            [new("A", "1"), new("B", "x=y"), new("C", ""), new("D", "4")],
            o.Environment);
    }

    [Theory]
    [InlineData("NOVALUE")]
    [InlineData("=value")]
    public void Env_without_key_and_equals_is_an_error(string value)
    {
        Assert.Equal($"--env: '{value}' is not of the form KEY=VALUE", Err("-e", value, "app"));
    }

    [Theory]
    [InlineData("", "")]
    [InlineData("/", "")]
    [InlineData("/app", "/app")]
    [InlineData("/app/", "/app")]
    [InlineData("/a/b//", "/a/b")]
    public void Root_path_is_normalised(string value, string expected)
    {
        Assert.Equal(expected, Ok("--root-path", value, "app").RootPath);
    }

    [Fact]
    public void Root_path_must_start_with_slash()
    {
        Assert.Equal("--root-path: 'app' must start with '/'", Err("--root-path", "app", "app"));
    }

    [Fact]
    public void Log_files()
    {
        Assert.Equal("/var/log/e.log", Ok("--error-logfile", "/var/log/e.log", "app").ErrorLog);
        Assert.Equal("/var/log/e.log", Ok("--log-file=/var/log/e.log", "app").ErrorLog);
        Assert.Equal(Path.GetFullPath("access.log"), Ok("--access-logfile", "access.log", "app").AccessLog);
    }

    // ---- gunicorn's other names and settings ----------------------------------------------------------

    [Theory]
    [InlineData("sync")]
    [InlineData("gthread")]
    [InlineData("gevent")]
    [InlineData("gunicorn.workers.gthread.ThreadWorker")]
    public void Worker_class_is_accepted_as_given(string workerClass)
    {
        Assert.Equal(workerClass, Ok("-k", workerClass, "app").WorkerClass);
        Assert.Equal(workerClass, Ok($"--worker-class={workerClass}", "app").WorkerClass);
    }

    [Theory]
    [InlineData("uvicorn.workers.UvicornWorker")]
    [InlineData("uvicorn_worker.UvicornH11Worker")]
    public void An_asgi_worker_class_is_refused(string workerClass)
    {
        Assert.Equal($"--worker-class: '{workerClass}' serves ASGI applications; Osprey serves WSGI applications only",
            Err("-k", workerClass, "app"));
    }

    [Fact]
    public void Gunicorns_names_for_osprey_options_set_them()
    {
        OspreyOptions o = Ok("--worker-connections", "77", "--proc-name", "shop", "app");
        Assert.Equal(77, o.MaxConnections);
        Assert.Equal("shop", o.Name);
    }

    [Fact]
    public void Gunicorn_flags_for_how_workers_run_are_read()
    {
        OspreyOptions d = Ok("app");
        Assert.True(d.Sendfile);
        Assert.False(d.CaptureOutput || d.EnableStdioInheritance || d.ReusePort || d.Initgroups || d.PrintConfig);

        OspreyOptions o = Ok("--no-sendfile", "--capture-output", "-R", "--reuse-port", "--initgroups", "--print-config",
            "--disable-redirect-access-to-syslog", "--reload-engine", "Poll", "app");
        Assert.False(o.Sendfile);
        Assert.True(o.CaptureOutput && o.EnableStdioInheritance && o.ReusePort && o.Initgroups && o.PrintConfig);
        Assert.Equal("poll", o.ReloadEngine);
    }

    [Fact]
    public void Worker_tmp_dir_must_exist()
    {
        string tmp = Path.GetTempPath();
        Assert.Equal(Path.GetFullPath(tmp), Ok("--worker-tmp-dir", tmp, "app").WorkerTmpDir);
        Assert.Equal("--worker-tmp-dir: directory '/no/such/dir' does not exist", Err("--worker-tmp-dir", "/no/such/dir", "app"));
        Assert.Equal("--reload-engine: invalid choice 'fsevents' (choose from auto, poll, inotify)", Err("--reload-engine", "fsevents", "app"));
    }

    [Theory]
    [InlineData("--log-syslog")]
    [InlineData("--log-config", "logging.ini")]
    [InlineData("--paste", "app.ini")]
    [InlineData("--ciphers", "ECDHE")]
    [InlineData("--ssl-version", "2")]
    [InlineData("--paster", "app.ini")]
    [InlineData("--tolerate-dangerous-framing")]
    [InlineData("--header-map", "dangerous")]
    public void A_gunicorn_option_osprey_lacks_is_named_with_why(params string[] option)
    {
        string message = Err([.. option, "app"]);
        Assert.StartsWith($"gunicorn's {option[0]} is not supported by Osprey: ", message, StringComparison.Ordinal);
    }

    // ---- defaults -----------------------------------------------------------------------------------

    [Fact]
    public void Defaults_match_the_options_record()
    {
        OspreyOptions o = Ok("app");
        var d = new OspreyOptions { App = "", AppModule = "", AppAttribute = "" };
        Assert.Equal(d.Workers, o.Workers);
        Assert.Equal(d.Threads, o.Threads);
        Assert.Equal(EngineKind.Auto, o.Engine);
        Assert.Null(o.Python);
        Assert.Null(o.Chdir);
        Assert.Empty(o.PythonPath);
        Assert.Empty(o.Environment);
        Assert.Equal("", o.RootPath);
        Assert.Equal(LogLevel.Info, o.LogLevel);
        Assert.Equal("-", o.ErrorLog);
        Assert.Null(o.AccessLog);
        Assert.Equal(d.BodyBufferSize, o.BodyBufferSize);
        Assert.Equal(d.Timeout, o.Timeout);
        Assert.Equal(d.GracefulTimeout, o.GracefulTimeout);
        Assert.Equal(d.KeepAlive, o.KeepAlive);
        Assert.Equal(d.Backlog, o.Backlog);
        Assert.Equal(d.LimitRequestLine, o.LimitRequestLine);
        Assert.Equal(d.LimitRequestFields, o.LimitRequestFields);
        Assert.Equal(d.LimitRequestFieldSize, o.LimitRequestFieldSize);
        Assert.Equal(0, o.LimitRequestBody);
    }
}
