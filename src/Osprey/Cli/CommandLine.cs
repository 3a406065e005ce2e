using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Wsgi;

namespace Osprey.Cli;

/// <summary>What the command line asks Osprey to do.</summary>
public abstract record ParseOutcome
{
    // Private so these four cases are the whole hierarchy: callers can switch over them safely.
    private ParseOutcome() { }

    public sealed record Run(OspreyOptions Options) : ParseOutcome;
    public sealed record ShowHelp(string Text) : ParseOutcome;
    public sealed record ShowVersion(string Text) : ParseOutcome;
    /// <summary>
    /// One line, meant to follow "osprey: " on stderr; 2 for the command line (argparse's code), 1 for a
    /// configuration file, or the code the file itself exited with (gunicorn's SystemExit).
    /// </summary>
    public sealed record Error(string Message, int ExitCode = 2) : ParseOutcome;
}

/// <summary>
/// Parses gunicorn-compatible arguments the way argparse does: <c>--opt value</c>, <c>--opt=value</c>,
/// <c>-b X</c>, <c>-bX</c>, unique prefixes of long options, and <c>--</c> to end options.
/// </summary>
public static class CommandLine
{
    private const int DefaultPort = 8000;

    // gunicorn's hard limits (gunicorn/http/message.py); larger values are refused rather than clamped
    // so a typo does not silently turn into a different limit.
    private const int MaxRequestLine = 8190;
    private const int MaxHeaders = 32768;
    private const int MaxHeaderTimeout = 24 * 3600;

    // Timers and waits take at most int.MaxValue milliseconds (about 24.8 days): longer durations would
    // crash a worker at the moment it needs them (TERM). gunicorn takes any number, and large ones
    // are written to mean "never", so they are lowered to this rather than refused.
    internal const int MaxDurationSeconds = 24 * 24 * 3600;

    public static string HelpText { get; } = BuildHelpText();

    internal static string VersionText { get; } = BuildVersionText();

    public static ParseOutcome Parse(IReadOnlyList<string> args, ConfigArguments? config = null, bool requireApp = true) =>
        Parse(args, Dns.GetHostAddresses, System.Environment.GetEnvironmentVariable, config, requireApp);

    /// <param name="resolveHost">Name lookup for bind hosts; tests pass a fake so they need no DNS.</param>
    /// <param name="environment">
    /// Environment lookup for the variables gunicorn reads defaults from (FORWARDED_ALLOW_IPS, PORT,
    /// WEB_CONCURRENCY); null, as tests pass, reads none.
    /// </param>
    /// <param name="config">A configuration file's settings, which the command line overrides (gunicorn's order).</param>
    /// <param name="requireApp">False to read the options alone, before the configuration file (which may name the APP) is read.</param>
    internal static ParseOutcome Parse(IReadOnlyList<string> args, Func<string, IPAddress[]> resolveHost,
        Func<string, string?>? environment = null, ConfigArguments? config = null, bool requireApp = true)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(resolveHost);
        return new Parser(resolveHost, environment).Run(args, config, requireApp);
    }

    private enum Opt
    {
        Help, Version, Bind, Workers, Threads, Engine, Python, Chdir, PythonPath, Env, RootPath,
        LogLevel, ErrorLog, AccessLog, Timeout, GracefulTimeout, KeepAlive, Backlog,
        LimitRequestLine, LimitRequestFields, LimitRequestFieldSize, LimitRequestBody, BodyBufferSize,
        MaxRequests, MaxRequestsJitter, MaxWorkerMemory, Pid, Name, Preload, Umask, User, Group, Daemon,
        HeaderTimeout, MinRequestBodyRate, MaxConnections,
        ForwardedAllowIps, ProxyProtocol, CertFile, KeyFile, Config, AccessLogFormat, Reload, ReloadExtraFile, CheckConfig, CaCerts, CertReqs,
        StatsdHost, StatsdPrefix, DogstatsdTags,
        WorkerClass, CaptureOutput, EnableStdioInheritance, ReusePort, NoSendfile, Initgroups, PrintConfig, WorkerTmpDir,
        ReloadEngine, DisableRedirectAccessToSyslog, ProxyAllowFrom,
    }

    private readonly record struct LongOption(string Name, Opt Id);

    private static readonly LongOption[] LongOptions =
    [
        new("--help", Opt.Help),
        new("--version", Opt.Version),
        new("--bind", Opt.Bind),
        new("--workers", Opt.Workers),
        new("--threads", Opt.Threads),
        new("--engine", Opt.Engine),
        new("--python", Opt.Python),
        new("--chdir", Opt.Chdir),
        new("--pythonpath", Opt.PythonPath),
        new("--env", Opt.Env),
        new("--root-path", Opt.RootPath),
        new("--log-level", Opt.LogLevel),
        new("--error-logfile", Opt.ErrorLog),
        new("--log-file", Opt.ErrorLog),
        new("--access-logfile", Opt.AccessLog),
        new("--access-logformat", Opt.AccessLogFormat),
        new("--statsd-host", Opt.StatsdHost),
        new("--statsd-prefix", Opt.StatsdPrefix),
        new("--dogstatsd-tags", Opt.DogstatsdTags),
        new("--timeout", Opt.Timeout),
        new("--graceful-timeout", Opt.GracefulTimeout),
        new("--keep-alive", Opt.KeepAlive),
        new("--backlog", Opt.Backlog),
        new("--limit-request-line", Opt.LimitRequestLine),
        new("--limit-request-fields", Opt.LimitRequestFields),
        // gunicorn spells this one with an underscore; the hyphen form is what people type.
        new("--limit-request-field_size", Opt.LimitRequestFieldSize),
        new("--limit-request-field-size", Opt.LimitRequestFieldSize),
        new("--limit-request-body", Opt.LimitRequestBody),
        new("--body-buffer-size", Opt.BodyBufferSize),
        new("--max-requests", Opt.MaxRequests),
        new("--max-requests-jitter", Opt.MaxRequestsJitter),
        new("--max-worker-memory", Opt.MaxWorkerMemory),
        new("--pid", Opt.Pid),
        new("--name", Opt.Name),
        new("--preload", Opt.Preload),
        new("--umask", Opt.Umask),
        new("--user", Opt.User),
        new("--group", Opt.Group),
        new("--daemon", Opt.Daemon),
        new("--header-timeout", Opt.HeaderTimeout),
        new("--min-request-body-rate", Opt.MinRequestBodyRate),
        new("--max-connections", Opt.MaxConnections),
        new("--forwarded-allow-ips", Opt.ForwardedAllowIps),
        new("--proxy-protocol", Opt.ProxyProtocol),
        new("--certfile", Opt.CertFile),
        new("--keyfile", Opt.KeyFile),
        new("--ca-certs", Opt.CaCerts),
        new("--cert-reqs", Opt.CertReqs),
        new("--config", Opt.Config),
        new("--reload", Opt.Reload),
        new("--reload-extra-file", Opt.ReloadExtraFile),
        new("--check-config", Opt.CheckConfig),
        new("--print-config", Opt.PrintConfig),
        // gunicorn's names for settings Osprey has under another name.
        new("--worker-connections", Opt.MaxConnections),
        new("--proc-name", Opt.Name),
        new("--worker-class", Opt.WorkerClass),
        new("--capture-output", Opt.CaptureOutput),
        new("--enable-stdio-inheritance", Opt.EnableStdioInheritance),
        new("--reuse-port", Opt.ReusePort),
        new("--no-sendfile", Opt.NoSendfile),
        new("--initgroups", Opt.Initgroups),
        new("--worker-tmp-dir", Opt.WorkerTmpDir),
        new("--reload-engine", Opt.ReloadEngine),
        new("--disable-redirect-access-to-syslog", Opt.DisableRedirectAccessToSyslog),
        new("--proxy-allow-from", Opt.ProxyAllowFrom),
    ];

    /// <summary>
    /// gunicorn's command-line options that Osprey does not carry out, with why: refused by name, so that
    /// a command moved from gunicorn says what is missing instead of "unrecognized option".
    /// </summary>
    private static readonly (string Name, string Reason)[] UnsupportedGunicornOptions =
    [
        ("--log-config", "logging is configured with --log-level, --error-logfile and --access-logfile"),
        ("--log-config-dict", "logging is configured with --log-level, --error-logfile and --access-logfile"),
        ("--log-config-json", "logging is configured with --log-level, --error-logfile and --access-logfile"),
        ("--logger-class", "logging is configured with --log-level, --error-logfile and --access-logfile"),
        ("--log-syslog", "Osprey does not log to syslog; under systemd, stderr goes to the journal"),
        ("--log-syslog-to", "Osprey does not log to syslog; under systemd, stderr goes to the journal"),
        ("--log-syslog-prefix", "Osprey does not log to syslog; under systemd, stderr goes to the journal"),
        ("--log-syslog-facility", "Osprey does not log to syslog; under systemd, stderr goes to the journal"),
        ("--paste", "PasteDeploy files are not read; name the application as MODULE:APP"),
        ("--paster", "PasteDeploy files are not read; name the application as MODULE:APP"),
        ("--paste-global", "PasteDeploy files are not read; name the application as MODULE:APP"),
        ("--ssl-version", "TLS versions are the system's (TLS 1.2 and 1.3)"),
        ("--ciphers", "cipher suites are the system's OpenSSL defaults"),
        ("--do-handshake-on-connect", "TLS handshakes are always done on connect"),
        ("--suppress-ragged-eofs", "TLS connections are always read that way"),
        ("--spew", "there is no line tracing"),
        // gunicorn's switches to loosen its request parser: Kestrel's parser, which Osprey uses, has none.
        ("--strip-header-spaces", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--tolerate-dangerous-framing", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--permit-unconventional-http-method", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--permit-unconventional-http-version", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--casefold-http-method", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--permit-obsolete-folding", "requests are parsed strictly by Kestrel's parser, which has no such switch"),
        ("--header-map", "header names with '_' are always dropped, as gunicorn's default (drop) does"),
        ("--forwarder-headers", "the proxy headers read are fixed: Forwarded and X-Forwarded-For/-Proto/-Host/-Ssl/-Protocol"),
    ];

    private static Opt? ShortOption(char c) => c switch
    {
        'h' => Opt.Help,
        'v' => Opt.Version,
        'b' => Opt.Bind,
        'w' => Opt.Workers,
        'e' => Opt.Env,
        't' => Opt.Timeout,
        'n' => Opt.Name,
        'p' => Opt.Pid,
        'm' => Opt.Umask,
        'u' => Opt.User,
        'g' => Opt.Group,
        'D' => Opt.Daemon,
        'c' => Opt.Config,
        'k' => Opt.WorkerClass,
        'R' => Opt.EnableStdioInheritance,
        _ => null,
    };

    private static string CanonicalName(Opt opt) => opt switch
    {
        Opt.Help => "--help",
        Opt.Version => "--version",
        Opt.Bind => "--bind",
        Opt.Workers => "--workers",
        Opt.Threads => "--threads",
        Opt.Engine => "--engine",
        Opt.Python => "--python",
        Opt.Chdir => "--chdir",
        Opt.PythonPath => "--pythonpath",
        Opt.Env => "--env",
        Opt.RootPath => "--root-path",
        Opt.LogLevel => "--log-level",
        Opt.ErrorLog => "--error-logfile",
        Opt.AccessLog => "--access-logfile",
        Opt.AccessLogFormat => "--access-logformat",
        Opt.Timeout => "--timeout",
        Opt.GracefulTimeout => "--graceful-timeout",
        Opt.KeepAlive => "--keep-alive",
        Opt.Backlog => "--backlog",
        Opt.LimitRequestLine => "--limit-request-line",
        Opt.LimitRequestFields => "--limit-request-fields",
        Opt.LimitRequestFieldSize => "--limit-request-field_size",
        Opt.LimitRequestBody => "--limit-request-body",
        Opt.BodyBufferSize => "--body-buffer-size",
        Opt.MaxRequests => "--max-requests",
        Opt.MaxRequestsJitter => "--max-requests-jitter",
        Opt.MaxWorkerMemory => "--max-worker-memory",
        Opt.Pid => "--pid",
        Opt.Name => "--name",
        Opt.Preload => "--preload",
        Opt.Umask => "--umask",
        Opt.User => "--user",
        Opt.Group => "--group",
        Opt.Daemon => "--daemon",
        Opt.HeaderTimeout => "--header-timeout",
        Opt.MinRequestBodyRate => "--min-request-body-rate",
        Opt.MaxConnections => "--max-connections",
        Opt.ForwardedAllowIps => "--forwarded-allow-ips",
        Opt.ProxyProtocol => "--proxy-protocol",
        Opt.CertFile => "--certfile",
        Opt.KeyFile => "--keyfile",
        Opt.CaCerts => "--ca-certs",
        Opt.CertReqs => "--cert-reqs",
        Opt.Config => "--config",
        Opt.Reload => "--reload",
        Opt.ReloadExtraFile => "--reload-extra-file",
        Opt.CheckConfig => "--check-config",
        Opt.StatsdHost => "--statsd-host",
        Opt.StatsdPrefix => "--statsd-prefix",
        Opt.DogstatsdTags => "--dogstatsd-tags",
        Opt.WorkerClass => "--worker-class",
        Opt.CaptureOutput => "--capture-output",
        Opt.EnableStdioInheritance => "--enable-stdio-inheritance",
        Opt.ReusePort => "--reuse-port",
        Opt.NoSendfile => "--no-sendfile",
        Opt.Initgroups => "--initgroups",
        Opt.PrintConfig => "--print-config",
        Opt.WorkerTmpDir => "--worker-tmp-dir",
        Opt.ReloadEngine => "--reload-engine",
        Opt.DisableRedirectAccessToSyslog => "--disable-redirect-access-to-syslog",
        Opt.ProxyAllowFrom => "--proxy-allow-from",
        _ => throw new ArgumentOutOfRangeException(nameof(opt)),
    };

    private static bool TakesValue(Opt opt) => opt is not (Opt.Help or Opt.Version or Opt.ProxyProtocol or Opt.Preload or Opt.Reload
        or Opt.CheckConfig or Opt.Daemon or Opt.CaptureOutput or Opt.EnableStdioInheritance or Opt.ReusePort or Opt.NoSendfile
        or Opt.Initgroups or Opt.PrintConfig or Opt.DisableRedirectAccessToSyslog);

    // argparse's rule: "-" is a value (stdin/stdout by convention) and so is anything that looks like a
    // negative number, so "--graceful-timeout -1" reports a range error instead of a missing value.
    private static bool LooksLikeOption(string arg) =>
        arg.Length > 1 && arg[0] == '-' && !(char.IsAsciiDigit(arg[1]) || (arg[1] == '.' && arg.Length > 2));

    private static ParseOutcome.Error Fail(string message) => new(message);

    private sealed class Parser(Func<string, IPAddress[]> resolveHost, Func<string, string?>? environmentVariable)
    {
        // Placeholder APP fields are replaced once the positional is known; it may come after options.
        private OspreyOptions options = new() { App = "", AppModule = "", AppAttribute = "" };
        private readonly List<BindAddress> binds = [];
        private readonly List<string> pythonPath = [];
        private readonly List<KeyValuePair<string, string>> environment = [];
        private readonly List<string> reloadExtraFiles = [];
        private bool forwardedAllowIpsGiven;
        private bool rootPathGiven;
        // Which source (0: configuration file, 1: GUNICORN_CMD_ARGS, 2: command line) last filled each list
        // option: a later source replaces a list rather than adding to it, as gunicorn's command line
        // replaces the file's bind.
        private readonly Dictionary<Opt, int> listSource = [];
        private int source;

        public ParseOutcome Run(IReadOnlyList<string> args, ConfigArguments? config, bool requireApp)
        {
            if (ApplyWebConcurrency() is string concurrencyError) return Fail(concurrencyError);
            string? app = null;
            if (config is not null)
            {
                source = 0;
                ParseOutcome? fromFile = RunSource(config.Arguments, ref app);
                if (fromFile is ParseOutcome.Error error) return new ParseOutcome.Error($"config file '{config.Path}': {error.Message}", 1);
                if (fromFile is not null) return new ParseOutcome.Error($"config file '{config.Path}': help and version are not settings", 1);
            }
            if (environmentVariable?.Invoke(CommandArgumentsVariable) is { Length: > 0 } commandArguments)
            {
                source = 1;
                string label = $"{CommandArgumentsVariable} (environment variable)";
                if (SplitShellWords(commandArguments) is not { } words) return Fail($"{label}: unterminated quote");
                ParseOutcome? outcome = RunSource(words, ref app);
                if (outcome is ParseOutcome.Error error) return Fail($"{label}: {error.Message}");
                if (outcome is not null) return Fail($"{label}: help and version are not settings");
            }
            source = 2;
            ParseOutcome? fromCommandLine = RunSource(args, ref app);
            if (fromCommandLine is not null) return fromCommandLine;

            // Checked last so that "osprey --help" and "osprey --version" work without an APP.
            if (!requireApp)
            {
                // Before the configuration file: rules across options wait for the whole picture.
                return new ParseOutcome.Run(options with { App = app ?? "", AppModule = "", AppAttribute = "", Binds = binds.ToArray() });
            }
            if (app is null) return Fail("no application given (usage: osprey [OPTIONS] MODULE:APP)");

            string? appError = ParseApp(app, out string module, out string attribute, out string? factoryArgs);
            if (appError is not null) return Fail(appError);

            // As gunicorn: FORWARDED_ALLOW_IPS replaces the default, the option replaces both.
            if (!forwardedAllowIpsGiven && environmentVariable?.Invoke("FORWARDED_ALLOW_IPS") is string fromEnvironment)
            {
                TrustedProxies? trusted = TrustedProxies.Parse(fromEnvironment, out string? error);
                if (trusted is null) return Fail($"FORWARDED_ALLOW_IPS (environment variable): {error}");
                options = options with { ForwardedAllowIps = trusted };
            }

            // As gunicorn, whose requests take SCRIPT_NAME from the worker's environment (where -e puts it
            // too): the usual way to mount an application below the root with it.
            if (!rootPathGiven)
            {
                string? scriptName = environment.LastOrDefault(e => e.Key == "SCRIPT_NAME").Value
                    ?? environmentVariable?.Invoke("SCRIPT_NAME");
                if (scriptName is { Length: > 0 })
                {
                    if (scriptName[0] != '/') return Fail($"SCRIPT_NAME (environment variable): '{scriptName}' must start with '/'");
                    options = options with { RootPath = scriptName.TrimEnd('/') };
                }
            }

            if (options.KeyFile is not null && options.CertFile is null)
            {
                return Fail("--keyfile needs --certfile (the certificate it belongs to)");
            }
            if (options.CaCerts is not null && options.CertFile is null)
            {
                return Fail("--ca-certs needs --certfile: client certificates are asked for in the TLS handshake");
            }
            if (options.CertReqs != Http.Kestrel.ClientCertificates.None && options.CaCerts is null)
            {
                return Fail("--cert-reqs 1 or 2 needs --ca-certs: the authorities client certificates must chain to");
            }
            if (options.CertFile is not null && options.Engine == EngineKind.Osprey)
            {
                return Fail("--engine osprey serves cleartext HTTP/1.1 only; with --certfile use --engine auto or kestrel");
            }

            if (binds.Count == 0 && environmentVariable?.Invoke("PORT") is { Length: > 0 } port)
            {
                // gunicorn's default under PaaS conventions (Heroku, Render, Cloud Run): all interfaces, $PORT.
                string? error = ParseBind($"0.0.0.0:{port}", resolveHost, out BindAddress? fromPort);
                if (error is not null) return Fail($"PORT (environment variable): '{port}' is not a valid port number (0-65535)");
                binds.Add(fromPort!);
            }
            if (binds.Count == 0)
            {
                binds.Add(new BindAddress.Tcp($"127.0.0.1:{DefaultPort}", IPAddress.Loopback, DefaultPort, "127.0.0.1"));
            }
            if (ResolvePaths() is string pathError) return Fail(pathError);

            return new ParseOutcome.Run(options with
            {
                App = app,
                AppModule = module,
                AppAttribute = attribute,
                FactoryArguments = factoryArgs,
                Binds = binds.ToArray(),
                PythonPath = pythonPath.ToArray(),
                Environment = environment.ToArray(),
                ReloadExtraFiles = reloadExtraFiles.ToArray(),
            });
        }

        /// <summary>
        /// As gunicorn, whose master changes to --chdir (once every source is read) before it binds, writes the
        /// pid file, opens the logs and loads the certificate: a relative path means one in that directory,
        /// wherever --chdir came among the options and sources. Resolved here, once, so that the master, each
        /// worker (which parses the same arguments in the same directory) and --print-config agree.
        /// Apply has checked that each is a possible path. Returns an error, or null.
        /// </summary>
        private string? ResolvePaths()
        {
            string directory = options.Chdir ?? Directory.GetCurrentDirectory();
            string In(string path) => Path.GetFullPath(path, directory);
            string? InOrNull(string? path) => path is null ? null : In(path);
            // "-" is stderr (the access log's stdout), not a file.
            string? LogPath(string? path) => path is null or "-" ? path : In(path);

            for (int i = 0; i < binds.Count; i++)
            {
                if (binds[i] is BindAddress.Unix unix) binds[i] = unix with { Path = In(unix.Path) };
            }
            for (int i = 0; i < reloadExtraFiles.Count; i++)
            {
                reloadExtraFiles[i] = In(reloadExtraFiles[i]);
            }
            string? workerTmpDir = InOrNull(options.WorkerTmpDir);
            // gunicorn makes its heartbeat files there, and a worker fails to boot without the directory.
            if (workerTmpDir is not null && !Directory.Exists(workerTmpDir))
            {
                return $"--worker-tmp-dir: directory '{options.WorkerTmpDir}' does not exist";
            }
            string? statsdHost = options.StatsdHost;
            if (statsdHost is not null && Logging.StatsdAddress.Parse(statsdHost, out _)?.UnixPath is string statsdPath)
            {
                statsdHost = "unix:" + In(statsdPath);
            }
            options = options with
            {
                PidFile = InOrNull(options.PidFile),
                ErrorLog = LogPath(options.ErrorLog)!,
                AccessLog = LogPath(options.AccessLog),
                WorkerTmpDir = workerTmpDir,
                StatsdHost = statsdHost,
                CertFile = InOrNull(options.CertFile),
                KeyFile = InOrNull(options.KeyFile),
                CaCerts = InOrNull(options.CaCerts),
            };
            return null;
        }

        /// <summary>One source's arguments; null to go on, otherwise help, version or an error.</summary>
        private ParseOutcome? RunSource(IReadOnlyList<string> args, ref string? app)
        {
            string? sourceApp = null;
            string? extra = null;
            bool optionsEnded = false;
            for (int i = 0; i < args.Count; i++)
            {
                string arg = args[i] ?? throw new ArgumentException("null argument", nameof(args));

                if (optionsEnded || !LooksLikeOption(arg))
                {
                    if (sourceApp is null) sourceApp = arg;
                    else extra ??= arg;
                    continue;
                }
                if (arg == "--")
                {
                    optionsEnded = true;
                    continue;
                }

                ParseOutcome? outcome = arg.StartsWith("--", StringComparison.Ordinal)
                    ? ParseLong(args, ref i)
                    : ParseShort(args, ref i);
                if (outcome is not null) return outcome;
            }
            if (extra is not null) return Fail($"unexpected argument '{extra}': only one APP may be given");
            app = sourceApp ?? app;
            return null;
        }

        /// <summary>gunicorn's default worker count is WEB_CONCURRENCY when set (PaaS convention); returns an error or null.</summary>
        private string? ApplyWebConcurrency()
        {
            if (environmentVariable?.Invoke("WEB_CONCURRENCY") is not { Length: > 0 } text)
            {
                return null;
            }
            if (!TryParseInteger(text, 1, int.MaxValue, out long n))
            {
                return $"WEB_CONCURRENCY (environment variable): '{text}' is not a positive integer";
            }
            options = options with { Workers = (int)n };
            return null;
        }

        /// <summary>Starts <paramref name="list"/> afresh when this source is the first to add to it after an earlier one did.</summary>
        private void Replacing<T>(Opt opt, List<T> list)
        {
            if (listSource.TryGetValue(opt, out int from) && from != source)
            {
                list.Clear();
            }
            listSource[opt] = source;
        }

        private ParseOutcome? ParseLong(IReadOnlyList<string> args, ref int i)
        {
            string arg = args[i];
            int eq = arg.IndexOf('=', StringComparison.Ordinal);
            string name = eq < 0 ? arg : arg[..eq];
            string? inline = eq < 0 ? null : arg[(eq + 1)..];

            string? lookupError = FindLong(name, out Opt opt);
            if (lookupError is not null) return Fail(lookupError);

            if (!TakesValue(opt))
            {
                return inline is null ? Apply(opt, "") : Fail($"option {CanonicalName(opt)} does not take a value");
            }
            if (inline is not null) return Apply(opt, inline);
            return TakeNext(args, ref i, opt);
        }

        private ParseOutcome? ParseShort(IReadOnlyList<string> args, ref int i)
        {
            string arg = args[i];
            // As argparse: flags cluster ("-RD", "-Rw3"), and the first option that takes a value takes the
            // rest of the word, or the next word.
            Opt? previous = null;
            for (int k = 1; k < arg.Length; k++)
            {
                Opt? found = ShortOption(arg[k]);
                if (found is not Opt opt)
                {
                    return previous is Opt flag
                        ? Fail($"option {CanonicalName(flag)} does not take a value (ignored explicit argument '{arg[k..]}')")
                        : Fail($"unrecognized option '{arg}'");
                }
                if (!TakesValue(opt))
                {
                    // Help and version end parsing, so anything clustered after them ("-hv") is moot.
                    if (Apply(opt, "") is ParseOutcome outcome) return outcome;
                    previous = opt;
                    continue;
                }
                // "-b=X" is accepted by argparse as well as "-bX".
                if (k + 1 < arg.Length) return Apply(opt, arg[k + 1] == '=' ? arg[(k + 2)..] : arg[(k + 1)..]);
                return TakeNext(args, ref i, opt);
            }
            return null;
        }

        private ParseOutcome? TakeNext(IReadOnlyList<string> args, ref int i, Opt opt)
        {
            if (i + 1 >= args.Count || LooksLikeOption(args[i + 1]))
            {
                return Fail($"option {CanonicalName(opt)} requires a value");
            }
            i++;
            return Apply(opt, args[i]);
        }

        /// <returns>null to keep parsing, otherwise the outcome (help, version or an error).</returns>
        private ParseOutcome? Apply(Opt opt, string value)
        {
            string name = CanonicalName(opt);
            switch (opt)
            {
                case Opt.Help:
                    return new ParseOutcome.ShowHelp(HelpText);
                case Opt.Version:
                    return new ParseOutcome.ShowVersion(VersionText);

                case Opt.Bind:
                {
                    string? error = ParseBind(value, resolveHost, out BindAddress? bind);
                    if (error is not null) return Fail(error);
                    if (bind is BindAddress.Unix unix && AbsolutePath(name, unix.Path, out _) is string pathError) return Fail(pathError);
                    Replacing(opt, binds);
                    binds.Add(bind!);
                    return null;
                }

                case Opt.Workers:
                    return Int(name, value, 1, int.MaxValue, n => options = options with { Workers = n });
                case Opt.Threads:
                    return Int(name, value, 1, int.MaxValue, n => options = options with { Threads = n });
                case Opt.Timeout:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { Timeout = Math.Min(n, MaxDurationSeconds) });
                case Opt.GracefulTimeout:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { GracefulTimeout = Math.Min(n, MaxDurationSeconds) });
                case Opt.KeepAlive:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { KeepAlive = Math.Min(n, MaxDurationSeconds) });
                case Opt.Backlog:
                    return Int(name, value, 1, int.MaxValue, n => options = options with { Backlog = n });
                case Opt.LimitRequestLine:
                    return Int(name, value, 0, MaxRequestLine, n => options = options with { LimitRequestLine = n });
                case Opt.LimitRequestFields:
                    return Int(name, value, 0, MaxHeaders, n => options = options with { LimitRequestFields = n });
                case Opt.LimitRequestFieldSize:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { LimitRequestFieldSize = n });
                case Opt.BodyBufferSize:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { BodyBufferSize = n });
                case Opt.MaxRequests:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { MaxRequests = n });
                case Opt.MaxRequestsJitter:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { MaxRequestsJitter = n });
                case Opt.MaxWorkerMemory:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { MaxWorkerMemory = n });
                case Opt.Pid:
                {
                    // Made absolute once every option is in (ResolvePaths), against --chdir's directory.
                    if (AbsolutePath(name, value, out _) is string error) return Fail(error);
                    options = options with { PidFile = value };
                    return null;
                }
                case Opt.Name:
                    if (value.Length == 0) return Fail($"{name}: value must not be empty");
                    options = options with { Name = value };
                    return null;
                case Opt.Preload:
                    options = options with { Preload = true };
                    return null;
                case Opt.Daemon:
                    options = options with { Daemon = true };
                    return null;
                // Names are looked up when the master starts (the user database belongs to the machine it runs on).
                case Opt.User:
                    if (value.Length == 0) return Fail($"{name}: value must not be empty");
                    options = options with { User = value };
                    return null;
                case Opt.Group:
                    if (value.Length == 0) return Fail($"{name}: value must not be empty");
                    options = options with { Group = value };
                    return null;
                case Opt.Umask:
                {
                    // gunicorn reads the umask as Python's int(x, 0) after turning a leading 0 into 0o: 022, 0o22, 0x12, 18.
                    if (!TryParseUmask(value, out int mask)) return Fail($"{name}: '{value}' is not a file mode (e.g. 0o22, 022 or 18)");
                    options = options with { Umask = mask };
                    return null;
                }
                case Opt.HeaderTimeout:
                    // No "unlimited": a head that never ends is exactly the slow-loris attack.
                    return Int(name, value, 1, MaxHeaderTimeout, n => options = options with { HeaderTimeout = n });
                case Opt.MinRequestBodyRate:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { MinRequestBodyRate = n });
                case Opt.MaxConnections:
                    return Int(name, value, 0, int.MaxValue, n => options = options with { MaxConnections = n });
                case Opt.LimitRequestBody:
                {
                    if (!TryParseInteger(value, 0, long.MaxValue, out long n))
                    {
                        return Fail(IntegerError(name, value, 0, long.MaxValue));
                    }
                    options = options with { LimitRequestBody = n };
                    return null;
                }

                case Opt.Engine:
                {
                    EngineKind? engine = value.ToLowerInvariant() switch
                    {
                        "auto" => EngineKind.Auto,
                        "kestrel" => EngineKind.Kestrel,
                        "osprey" => EngineKind.Osprey,
                        _ => null,
                    };
                    if (engine is not EngineKind kind)
                    {
                        return Fail($"{name}: invalid choice '{value}' (choose from auto, kestrel, osprey)");
                    }
                    options = options with { Engine = kind };
                    return null;
                }

                case Opt.LogLevel:
                {
                    LogLevel? level = value.ToLowerInvariant() switch
                    {
                        "debug" => LogLevel.Debug,
                        "info" => LogLevel.Info,
                        "warning" => LogLevel.Warning,
                        "error" => LogLevel.Error,
                        "critical" => LogLevel.Critical,
                        _ => null,
                    };
                    if (level is not LogLevel l)
                    {
                        return Fail($"{name}: invalid choice '{value}' (choose from debug, info, warning, error, critical)");
                    }
                    options = options with { LogLevel = l };
                    return null;
                }

                case Opt.Python:
                    if (value.Length == 0) return Fail($"{name}: value must not be empty");
                    options = options with { Python = value };
                    return null;

                case Opt.Chdir:
                {
                    // Absolute now, as gunicorn does, so later relative paths and the supervisor agree on it.
                    if (AbsolutePath(name, value, out string full) is string error) return Fail(error);
                    if (!Directory.Exists(full)) return Fail($"{name}: directory '{value}' does not exist");
                    options = options with { Chdir = full };
                    return null;
                }

                case Opt.PythonPath:
                    Replacing(opt, pythonPath);
                    foreach (string part in value.Split(','))
                    {
                        if (part.Length > 0) pythonPath.Add(part);
                    }
                    return null;

                case Opt.Env:
                {
                    int eq = value.IndexOf('=', StringComparison.Ordinal);
                    if (eq <= 0) return Fail($"{name}: '{value}' is not of the form KEY=VALUE");
                    Replacing(opt, environment);
                    environment.Add(new KeyValuePair<string, string>(value[..eq], value[(eq + 1)..]));
                    return null;
                }

                case Opt.RootPath:
                {
                    if (value.Length > 0 && value[0] != '/') return Fail($"{name}: '{value}' must start with '/'");
                    options = options with { RootPath = value.TrimEnd('/') };
                    rootPathGiven = true;
                    return null;
                }

                case Opt.ForwardedAllowIps:
                {
                    TrustedProxies? trusted = TrustedProxies.Parse(value, out string? error);
                    if (trusted is null) return Fail($"{name}: {error}");
                    options = options with { ForwardedAllowIps = trusted };
                    forwardedAllowIpsGiven = true;
                    return null;
                }
                case Opt.ProxyProtocol:
                    options = options with { ProxyProtocol = true };
                    return null;
                case Opt.ProxyAllowFrom:
                {
                    TrustedProxies? trusted = TrustedProxies.Parse(value, out string? error);
                    if (trusted is null) return Fail($"{name}: {error}");
                    options = options with { ProxyAllowFrom = trusted };
                    return null;
                }

                case Opt.StatsdHost:
                {
                    if (Logging.StatsdAddress.Parse(value, out string? error) is not { } address) return Fail($"{name}: {error}");
                    if (address.UnixPath is string path && AbsolutePath(name, path, out _) is string pathError) return Fail(pathError);
                    options = options with { StatsdHost = value };
                    return null;
                }
                case Opt.StatsdPrefix:
                    options = options with { StatsdPrefix = value };
                    return null;
                case Opt.DogstatsdTags:
                    options = options with { DogstatsdTags = value };
                    return null;

                case Opt.Reload:
                    options = options with { Reload = true };
                    return null;
                case Opt.CheckConfig:
                    options = options with { CheckConfig = true };
                    return null;
                case Opt.PrintConfig:
                    options = options with { PrintConfig = true };
                    return null;

                case Opt.WorkerClass:
                {
                    if (WorkerClasses.Refusal(value) is string refusal) return Fail($"{name}: {refusal}");
                    options = options with { WorkerClass = value };
                    return null;
                }
                case Opt.CaptureOutput:
                    options = options with { CaptureOutput = true };
                    return null;
                case Opt.EnableStdioInheritance:
                    options = options with { EnableStdioInheritance = true };
                    return null;
                case Opt.ReusePort:
                    options = options with { ReusePort = true };
                    return null;
                case Opt.NoSendfile:
                    options = options with { Sendfile = false };
                    return null;
                case Opt.Initgroups:
                    options = options with { Initgroups = true };
                    return null;
                case Opt.DisableRedirectAccessToSyslog:
                    // gunicorn's access log goes to syslog only with --log-syslog, which Osprey has not.
                    return null;
                case Opt.WorkerTmpDir:
                {
                    // Checked to exist once it is resolved against --chdir's directory (ResolvePaths).
                    if (AbsolutePath(name, value, out _) is string error) return Fail(error);
                    options = options with { WorkerTmpDir = value };
                    return null;
                }
                case Opt.ReloadEngine:
                {
                    string engine = value.ToLowerInvariant();
                    if (engine is not ("auto" or "poll" or "inotify"))
                    {
                        return Fail($"{name}: invalid choice '{value}' (choose from auto, poll, inotify)");
                    }
                    options = options with { ReloadEngine = engine };
                    return null;
                }
                case Opt.ReloadExtraFile:
                {
                    if (AbsolutePath(name, value, out _) is string error) return Fail(error);
                    Replacing(opt, reloadExtraFiles);
                    reloadExtraFiles.Add(value);
                    return null;
                }

                case Opt.Config:
                    if (source == 0) return Fail("a config file cannot name another config file");
                    if (value.Length == 0) return Fail($"{name}: value must not be empty");
                    options = options with { Config = value };
                    return null;

                case Opt.CertReqs:
                    return Int(name, value, 0, 2, n => options = options with { CertReqs = (Http.Kestrel.ClientCertificates)n });

                case Opt.CertFile:
                case Opt.KeyFile:
                case Opt.CaCerts:
                {
                    // In --chdir's directory when relative (ResolvePaths), where gunicorn's workers load them.
                    if (AbsolutePath(name, value, out _) is string error) return Fail(error);
                    options = opt switch
                    {
                        Opt.CertFile => options with { CertFile = value },
                        Opt.KeyFile => options with { KeyFile = value },
                        _ => options with { CaCerts = value },
                    };
                    return null;
                }

                case Opt.ErrorLog:
                {
                    if (value != "-" && AbsolutePath(name, value, out _) is string error) return Fail(error);
                    options = options with { ErrorLog = value };
                    return null;
                }
                case Opt.AccessLog:
                {
                    if (value != "-" && AbsolutePath(name, value, out _) is string error) return Fail(error);
                    options = options with { AccessLog = value };
                    return null;
                }
                case Opt.AccessLogFormat:
                {
                    AccessLogFormat? format = Wsgi.AccessLogFormat.Parse(value, out string? error);
                    if (format is null) return Fail($"{name}: {error}");
                    options = options with { AccessLogFormat = format };
                    return null;
                }

                default:
                    throw new ArgumentOutOfRangeException(nameof(opt));
            }
        }

        /// <summary>The path made absolute against the current directory; an error for an empty or impossible one.</summary>
        private static string? AbsolutePath(string name, string value, out string full)
        {
            full = "";
            if (value.Length == 0) return $"{name}: value must not be empty";
            try
            {
                full = Path.GetFullPath(value);
                return null;
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
            {
                // A NUL byte, which a configuration file's string can carry.
                return $"{name}: invalid path '{value.Replace("\0", "\\0", StringComparison.Ordinal)}'";
            }
        }

        private static ParseOutcome? Int(string name, string value, int min, int max, Action<int> set)
        {
            if (!TryParseInteger(value, min, max, out long n)) return Fail(IntegerError(name, value, min, max));
            set((int)n);
            return null;
        }
    }

    /// <summary>Options from the environment, between the configuration file and the command line, as gunicorn reads them.</summary>
    public const string CommandArgumentsVariable = "GUNICORN_CMD_ARGS";

    /// <summary>Words as a POSIX shell splits them (Python's shlex.split, which gunicorn uses); null for an unterminated quote.</summary>
    internal static List<string>? SplitShellWords(string text)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        bool inWord = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsWhiteSpace(c))
            {
                if (inWord)
                {
                    words.Add(word.ToString());
                    word.Clear();
                    inWord = false;
                }
                continue;
            }
            inWord = true;
            if (c == '\\')
            {
                if (++i < text.Length) word.Append(text[i]);
            }
            else if (c == '\'')
            {
                int close = text.IndexOf('\'', i + 1);
                if (close < 0) return null;
                word.Append(text, i + 1, close - i - 1);
                i = close;
            }
            else if (c == '"')
            {
                for (i++; ; i++)
                {
                    if (i >= text.Length) return null;
                    if (text[i] == '"') break;
                    // Inside double quotes a backslash escapes only these, as in sh.
                    if (text[i] == '\\' && i + 1 < text.Length && text[i + 1] is '"' or '\\' or '$' or '`') i++;
                    word.Append(text[i]);
                }
            }
            else
            {
                word.Append(c);
            }
        }
        if (inWord) words.Add(word.ToString());
        return words;
    }

    /// <summary>Exact match first, then a unique prefix, as argparse's allow_abbrev does.</summary>
    private static string? FindLong(string name, out Opt opt)
    {
        foreach (LongOption o in LongOptions)
        {
            if (o.Name == name)
            {
                opt = o.Id;
                return null;
            }
        }
        opt = default;
        foreach ((string unsupported, string reason) in UnsupportedGunicornOptions)
        {
            if (unsupported == name) return $"gunicorn's {name} is not supported by Osprey: {reason}";
        }

        Opt? match = null;
        bool ambiguous = false;
        var candidates = new StringBuilder();
        foreach (LongOption o in LongOptions)
        {
            if (!o.Name.StartsWith(name, StringComparison.Ordinal)) continue;
            if (candidates.Length > 0) candidates.Append(", ");
            candidates.Append(o.Name);
            // A prefix matching only spellings of one option (field_size/field-size) picks that option.
            if (match is null) match = o.Id;
            else if (match != o.Id) ambiguous = true;
        }

        opt = match ?? default;
        if (ambiguous) return $"ambiguous option '{name}' could match {candidates}";
        if (match is null) return $"unrecognized option '{name}'";
        return null;
    }

    private static bool TryParseUmask(string text, out int mask)
    {
        mask = 0;
        string digits = text;
        int radix = 10;
        if (digits.StartsWith("0o", StringComparison.OrdinalIgnoreCase)) { radix = 8; digits = digits[2..]; }
        else if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) { radix = 16; digits = digits[2..]; }
        else if (digits.Length > 1 && digits[0] == '0') { radix = 8; digits = digits[1..]; }
        if (digits.Length is 0 or > 8) return false;
        int n = 0;
        foreach (char c in digits)
        {
            int d = char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiHexDigit(c) ? char.ToLowerInvariant(c) - 'a' + 10 : 99;
            if (d >= radix) return false;
            n = n * radix + d;
        }
        if (n > 511) return false; // 0o777
        mask = n;
        return true;
    }

    private static bool TryParseInteger(string text, long min, long max, out long value) =>
        long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value)
        && value >= min && value <= max;

    private static string IntegerError(string name, string value, long min, long max)
    {
        bool unbounded = max == int.MaxValue || max == long.MaxValue;
        string what = (min, unbounded) switch
        {
            (1, true) => "a positive integer",
            (0, true) => "a non-negative integer",
            _ => $"an integer between {min} and {max}",
        };
        return $"{name}: '{value}' is not {what}";
    }

    // ---- APP ----------------------------------------------------------------------------------------

    // Python keywords cannot be attribute names (gunicorn parses the attribute with ast and would fail).
    private static readonly HashSet<string> PythonKeywords = new(StringComparer.Ordinal)
    {
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
        "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in",
        "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
    };

    /// <returns>null on success, otherwise the error message.</returns>
    internal static string? ParseApp(string app, out string module, out string attribute, out string? factoryArgs)
    {
        // The module never contains ':', but factory arguments may ("f('a:b')"), so split at the first one.
        int colon = app.IndexOf(':', StringComparison.Ordinal);
        module = colon < 0 ? app : app[..colon];
        string target = colon < 0 ? "application" : app[(colon + 1)..];
        attribute = "";
        factoryArgs = null;

        string prefix = $"invalid application '{app}'";
        if (module.Length == 0) return $"{prefix}: missing module name";
        foreach (string part in module.Split('.'))
        {
            if (!IsIdentifier(part)) return $"{prefix}: '{module}' is not a dotted Python module path";
        }
        if (target.Length == 0) return $"{prefix}: missing attribute name after ':'";

        int open = target.IndexOf('(', StringComparison.Ordinal);
        string name = open < 0 ? target : target[..open];
        if (!IsIdentifier(name) || PythonKeywords.Contains(name))
        {
            return $"{prefix}: '{name}' is not a valid Python identifier";
        }
        if (open >= 0)
        {
            int close = FindClosingParen(target, open);
            if (close < 0) return $"{prefix}: unbalanced parentheses or unterminated string";
            if (close != target.Length - 1) return $"{prefix}: unexpected text after ')'";
            factoryArgs = target[(open + 1)..close];
        }
        attribute = name;
        return null;
    }

    /// <summary>Index of the ')' matching <paramref name="open"/>, skipping Python string literals; -1 if none.</summary>
    private static int FindClosingParen(string s, int open)
    {
        int depth = 0;
        for (int i = open; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\'' or '"')
            {
                i = EndOfString(s, i);
                if (i < 0) return -1;
            }
            else if (c == '(')
            {
                depth++;
            }
            else if (c == ')' && --depth == 0)
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>Index of the last quote of the literal starting at <paramref name="start"/>; -1 if unterminated.</summary>
    private static int EndOfString(string s, int start)
    {
        char quote = s[start];
        bool triple = start + 2 < s.Length && s[start + 1] == quote && s[start + 2] == quote;
        for (int i = start + (triple ? 3 : 1); i < s.Length; i++)
        {
            char c = s[i];
            if (c == '\\')
            {
                // Raw strings too: a backslash still keeps the next quote from closing the literal.
                i++;
            }
            else if (c == quote)
            {
                if (!triple) return i;
                if (i + 2 < s.Length && s[i + 1] == quote && s[i + 2] == quote) return i + 2;
            }
        }
        return -1;
    }

    // Python identifiers are Unicode (PEP 3131), so check categories rather than ASCII ranges.
    private static bool IsIdentifier(string s)
    {
        if (s.Length == 0) return false;
        bool first = true;
        foreach (Rune r in s.EnumerateRunes())
        {
            UnicodeCategory cat = Rune.GetUnicodeCategory(r);
            bool start = r.Value == '_' || cat is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
                or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
                or UnicodeCategory.LetterNumber;
            bool cont = start || cat is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
                or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation;
            if (first ? !start : !cont) return false;
            first = false;
        }
        return true;
    }

    // ---- --bind -------------------------------------------------------------------------------------

    /// <returns>null on success, otherwise the error message.</returns>
    internal static string? ParseBind(string text, Func<string, IPAddress[]> resolveHost, out BindAddress? bind)
    {
        bind = null;
        string prefix = $"invalid bind address '{text}'";

        // gunicorn accepts both "unix:/path" and "unix:///path".
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text[5..];
            if (path.StartsWith("//", StringComparison.Ordinal)) path = path[2..];
            if (path.Length == 0) return $"{prefix}: missing socket path";
            bind = new BindAddress.Unix(text, path);
            return null;
        }
        if (text.StartsWith("fd://", StringComparison.Ordinal))
        {
            string fd = text[5..];
            if (!TryParseInteger(fd, 0, int.MaxValue, out long n)) return $"{prefix}: '{fd}' is not a valid file descriptor";
            bind = new BindAddress.FileDescriptor(text, (int)n);
            return null;
        }

        string netloc = text.StartsWith("tcp://", StringComparison.Ordinal) ? text[6..] : text;
        string host;
        string port;
        if (netloc.StartsWith('['))
        {
            int close = netloc.IndexOf(']', StringComparison.Ordinal);
            if (close < 0) return $"{prefix}: missing ']'";
            host = netloc[1..close];
            string after = netloc[(close + 1)..];
            if (after.Length == 0) port = DefaultPort.ToString(CultureInfo.InvariantCulture);
            else if (after[0] == ':') port = after[1..];
            else return $"{prefix}: expected ':PORT' after ']'";
        }
        else
        {
            int colon = netloc.IndexOf(':', StringComparison.Ordinal);
            if (colon >= 0 && netloc.IndexOf(':', colon + 1) >= 0)
            {
                return $"{prefix}: IPv6 addresses must be in brackets, e.g. [::1]:8000";
            }
            host = colon < 0 ? netloc : netloc[..colon];
            port = colon < 0 ? DefaultPort.ToString(CultureInfo.InvariantCulture) : netloc[(colon + 1)..];
            // ":PORT" is every IPv4 interface in gunicorn (Python binds an empty host to INADDR_ANY), and is how
            // Cloud Run's samples and many Dockerfiles write it (--bind :$PORT).
            if (colon == 0) host = "0.0.0.0";
        }

        if (host.Length == 0) return $"{prefix}: missing host (use 0.0.0.0:PORT or [::]:PORT for all interfaces)";
        if (!TryParseInteger(port, 0, 65535, out long portNumber))
        {
            return $"{prefix}: '{port}' is not a valid port number (0-65535)";
        }

        string? error = ResolveHost(host, resolveHost, out IPAddress? address);
        if (error is not null) return $"{prefix}: {error}";
        bind = new BindAddress.Tcp(text, address!, (int)portNumber, host);
        return null;
    }

    private static string? ResolveHost(string host, Func<string, IPAddress[]> resolveHost, out IPAddress? address)
    {
        address = null;
        // Without DNS: it is the common case and must work in sandboxes with no resolver configured.
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
            return null;
        }
        if (host.Contains(':', StringComparison.Ordinal))
        {
            if (IPAddress.TryParse(host, out IPAddress? v6) && v6.AddressFamily == AddressFamily.InterNetworkV6)
            {
                address = v6;
                return null;
            }
            return $"'{host}' is not a valid IPv6 address";
        }
        if (IsDigitsAndDots(host))
        {
            // IPAddress.TryParse accepts "8000" as 0.0.31.64; "-b 8000" almost certainly meant a port.
            if (TryParseDottedQuad(host, out IPAddress? v4))
            {
                address = v4;
                return null;
            }
            return $"'{host}' is not a valid IPv4 address";
        }

        IPAddress[] found;
        try
        {
            found = resolveHost(host);
        }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            return $"cannot resolve host '{host}': {e.Message}";
        }
        foreach (IPAddress a in found)
        {
            if (a.AddressFamily == AddressFamily.InterNetwork)
            {
                address = a;
                return null;
            }
        }
        if (found.Length == 0) return $"cannot resolve host '{host}': no addresses";
        address = found[0];
        return null;
    }

    private static bool IsDigitsAndDots(string s)
    {
        foreach (char c in s)
        {
            if (!char.IsAsciiDigit(c) && c != '.') return false;
        }
        return true;
    }

    private static bool TryParseDottedQuad(string s, out IPAddress? address)
    {
        address = null;
        string[] parts = s.Split('.');
        if (parts.Length != 4) return false;
        var bytes = new byte[4];
        for (int i = 0; i < 4; i++)
        {
            if (parts[i].Length is 0 or > 3 || !byte.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out bytes[i]))
            {
                return false;
            }
        }
        address = new IPAddress(bytes);
        return true;
    }

    // ---- help and version ---------------------------------------------------------------------------

    private static string BuildVersionText() => $"osprey (version {OspreyVersion.Release})";

    private static string BuildHelpText()
    {
        // Defaults come from the options record so the help cannot drift from what a run actually uses.
        var d = new OspreyOptions { App = "", AppModule = "", AppAttribute = "" };
        string level = d.LogLevel.ToString().ToLowerInvariant();
        string engine = d.Engine.ToString().ToLowerInvariant();
        string accessLog = d.AccessLog ?? "off";
        string rootPath = d.RootPath.Length == 0 ? "''" : d.RootPath;
        return string.Create(CultureInfo.InvariantCulture, $"""
            usage: osprey [OPTIONS] [APP_MODULE]

            Serve a Python WSGI application. APP_MODULE is MODULE[:ATTR] (ATTR defaults to 'application')
            or MODULE:FACTORY(ARGS), which calls FACTORY with literal ARGS to build the application.

            positional arguments:
              APP_MODULE                     e.g. myproject.wsgi, app:server or app:create_app('prod')

            Server socket:
              -b ADDRESS, --bind ADDRESS     Socket to bind; repeatable. HOST:PORT, HOST (port {DefaultPort}),
                                             :PORT (all IPv4 interfaces), [IPV6]:PORT, unix:PATH or
                                             fd://N. [127.0.0.1:{DefaultPort}]
              --backlog INT                  Maximum number of pending connections. [{d.Backlog}]
              --max-connections INT, --worker-connections INT
                                             Connections one worker serves at once; more wait in the
                                             backlog. 0 means unlimited. [{d.MaxConnections}]
              -m INT, --umask INT            umask while binding unix sockets (e.g. 0o007). [0]
              --reuse-port                   Let other processes (another osprey) listen on the same
                                             TCP ports (SO_REUSEPORT). [off]

            Process:
              -p FILE, --pid FILE            Write the master's process id to FILE.
              -n STRING, --name STRING, --proc-name STRING
                                             Name shown in process titles (ps). [APP_MODULE]
              -D, --daemon                   Detach from the terminal: the command returns 0 once a
                                             worker serves (or the start-up error and its exit code).
              -R, --enable-stdio-inheritance
                                             With --daemon, keep stdin, stdout and stderr instead of
                                             /dev/null. [off]
              -u USER, --user USER           Run the workers as this user (name or id); the master
                                             keeps its own. Needs root. [the master's]
              -g GROUP, --group GROUP        Run the workers with this group (name or id) as their
                                             only group. [--user's primary group, else the master's]
              --initgroups                   With --user, give the workers the user's supplementary
                                             groups too. [off]

            Worker processes:
              -w INT, --workers INT          Number of worker processes. [{d.Workers}]
              --threads INT                  Threads per worker serving requests. [{d.Threads}]
              -k CLASS, --worker-class CLASS
                                             gunicorn's worker class: sync and gthread are what
                                             Osprey's workers are; others are served that way, with a
                                             warning; ASGI workers (uvicorn) are refused. [sync]
              --engine {"{auto,kestrel,osprey}"}
                                             HTTP engine; auto means osprey, the own epoll loop
                                             (kestrel with --certfile). [{engine}]
              -t INT, --timeout INT          A request running longer than this many seconds is
                                             answered 504, all Python stacks are logged and the
                                             worker is recycled; 0 disables. [{d.Timeout}]
              --graceful-timeout INT         Seconds workers get to finish requests when restarted or
                                             stopped. [{d.GracefulTimeout}]
              --max-requests INT             Recycle a worker after this many requests; 0 disables.
                                             [{d.MaxRequests}]
              --max-requests-jitter INT      Add a random 0..INT to each worker's --max-requests, so
                                             workers do not all recycle at once. [{d.MaxRequestsJitter}]
              --max-worker-memory MB         Recycle a worker whose resident memory exceeds MB; 0
                                             disables. [{d.MaxWorkerMemory}]
              --preload                      Accepted for gunicorn compatibility; no effect: workers are
                                             started processes (no fork), each imports the application.
              --reload                       Development: replace workers when a Python file they
                                             imported changes (no request fails). [off]
              --reload-extra-file FILE       With --reload, also watch FILE (templates...); repeatable.
              --keep-alive INT               Seconds to wait for the next request on a keep-alive
                                             connection. [{d.KeepAlive}]
              --no-sendfile                  Send wsgi.file_wrapper files by reading them, not with
                                             sendfile (for file systems where it fails). [sendfile]
              --worker-tmp-dir DIR           Accepted for gunicorn compatibility; no effect: workers
                                             keep no heartbeat files.
              --reload-engine {"{auto,poll,inotify}"}
                                             Accepted for gunicorn compatibility; --reload polls.

            Python:
              --python PATH                  Python interpreter to embed.
                                             [$VIRTUAL_ENV/bin/python, then python3 on PATH]
              --chdir DIR                    Change to this directory before loading the application;
                                             relative paths of the other options (pid file, logs,
                                             unix sockets, certificates) are in it, as in gunicorn.
              --pythonpath DIRS              Comma-separated directories to add to sys.path, the last
                                             first (as gunicorn); repeatable.
              -e KEY=VALUE, --env KEY=VALUE  Set an environment variable; repeatable.
              --root-path PATH               SCRIPT_NAME of every request, for an application mounted
                                             below the root. [{rootPath}]

            Logging:
              --log-level LEVEL              debug, info, warning, error or critical. [{level}]
              --error-logfile FILE, --log-file FILE
                                             Error log; '-' is stderr. [{d.ErrorLog}]
              --access-logfile FILE          Access log; '-' is stdout. [{accessLog}]
              --capture-output               With an --error-logfile file, stdout and stderr go to it
                                             too (print() always does; this adds C code and child
                                             processes). [off]
              --access-logformat STRING      Access log line, gunicorn's atoms: %(h)s, %(r)s, %(s)s,
                                             %(D)s microseconds, %({"{header}"}i)s... [gunicorn's]
              --statsd-host ADDRESS          Send gunicorn's StatsD metrics (requests, durations,
                                             statuses, workers, log errors) to HOST:PORT or
                                             unix:PATH over UDP. [none]
              --statsd-prefix PREFIX         Put PREFIX. before every metric name. [none]
              --dogstatsd-tags TAGS          DogStatsD tags for every metric: tag1:value,tag2. [none]

            Request limits:
              --limit-request-line INT       Maximum size of the request line in bytes, at most
                                             {MaxRequestLine}; 0 means unlimited. [{d.LimitRequestLine}]
              --limit-request-fields INT     Maximum number of header fields, 0 to {MaxHeaders}. [{d.LimitRequestFields}]
              --limit-request-field_size INT
                                             Maximum size of a header field in bytes; 0 means
                                             unlimited. [{d.LimitRequestFieldSize}]
              --limit-request-body INT       Maximum size of a request body in bytes; 0 means
                                             unlimited. [{d.LimitRequestBody}]
              --body-buffer-size BYTES       Bodies up to this size are read completely before the
                                             application is called. [{d.BodyBufferSize}]
              --header-timeout SECONDS       Time a client gets to send a whole request head;
                                             408 after it. [{d.HeaderTimeout}]
              --min-request-body-rate BYTES/S
                                             Slowest request body accepted (after a 5 s grace);
                                             408 below it. 0 disables. [{d.MinRequestBodyRate}]

            Proxies:
              --forwarded-allow-ips STRING   Comma-separated addresses and networks (10.0.0.0/8) of the
                                             proxies whose X-Forwarded-For/-Proto/-Host and Forwarded
                                             headers set REMOTE_ADDR, wsgi.url_scheme and HTTP_HOST; '*'
                                             trusts every peer. Default: $FORWARDED_ALLOW_IPS, else
                                             [{TrustedProxies.DefaultText}]
              --proxy-protocol               Accept a PROXY protocol v1 or v2 header at the start of
                                             connections from those proxies. [off]
              --proxy-allow-from STRING      The peers whose PROXY header is accepted, if not those of
                                             --forwarded-allow-ips. Same form.

            TLS:
              --certfile FILE                PEM certificate (chain): every listener then speaks TLS,
                                             HTTP/2 and HTTP/1.1 chosen by ALPN, served by Kestrel.
              --keyfile FILE                 PEM private key of --certfile; without it the key is read
                                             from the --certfile file. Both are read again on reload
                                             (HUP), so a renewed certificate needs no restart.
              --ca-certs FILE                PEM authorities that client certificates must chain to.
              --cert-reqs INT                Client certificates: 0 not asked for, 1 checked when
                                             given, 2 required (gunicorn's ssl.CERT_*). [0]

            Configuration:
              -c CONFIG, --config CONFIG     gunicorn configuration file (Python; PATH or file:PATH) to read
                                             settings from, or python:MODULE to import; the command line
                                             overrides them.
                                             [./{ConfigFile.DefaultName} if it exists]
              --check-config                 Check the options, the certificate, --user and --group and
                                             that the application imports, then exit: 0 if all is well,
                                             1 if not.
              --print-config                 Print every setting, then check as --check-config does.

            Other:
              -h, --help                     Show this help message and exit.
              -v, --version                  Show the version and exit.

            """);
    }
}
