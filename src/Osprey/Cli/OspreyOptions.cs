namespace Osprey.Cli;

/// <summary>Where a listener binds, as given by <c>-b/--bind</c>.</summary>
public abstract record BindAddress(string Original)
{
    public sealed record Tcp(string Original, System.Net.IPAddress Address, int Port, string Host) : BindAddress(Original);
    public sealed record Unix(string Original, string Path) : BindAddress(Original);
    public sealed record FileDescriptor(string Original, int Fd) : BindAddress(Original);
}

public enum LogLevel { Debug, Info, Warning, Error, Critical }

public enum EngineKind { Auto, Kestrel, Osprey }

/// <summary>
/// Every setting of one Osprey run, immutable once parsed. Names follow gunicorn's settings
/// (a user moving from gunicorn finds the same flag doing the same thing).
/// </summary>
public sealed record OspreyOptions
{
    /// <summary>APP as typed: <c>module</c>, <c>module:attr</c>, <c>module:factory()</c> or <c>module:factory('x', 1)</c>.</summary>
    public required string App { get; init; }
    public required string AppModule { get; init; }
    /// <summary>Attribute name, or the factory's name when <see cref="FactoryArguments"/> is set.</summary>
    public required string AppAttribute { get; init; }
    /// <summary>The text between the factory's parentheses (evaluated by Python's ast.literal_eval), or null for a plain attribute.</summary>
    public string? FactoryArguments { get; init; }

    public IReadOnlyList<BindAddress> Binds { get; init; } = [];
    public int Workers { get; init; } = 1;
    public int Threads { get; init; } = 1;
    public EngineKind Engine { get; init; } = EngineKind.Auto;

    /// <summary>Interpreter to embed (<c>--python</c>), or null to use $VIRTUAL_ENV/bin/python, then python3 on PATH.</summary>
    public string? Python { get; init; }
    /// <summary>
    /// Absolute. Relative paths of the pid file, the logs, unix sockets, the certificate files, --worker-tmp-dir
    /// and --reload-extra-file are in this directory (else the current one): gunicorn's master has changed to it
    /// before it uses them. The configuration file is read before the change, from the current directory.
    /// </summary>
    public string? Chdir { get; init; }
    public IReadOnlyList<string> PythonPath { get; init; } = [];
    public IReadOnlyList<KeyValuePair<string, string>> Environment { get; init; } = [];
    /// <summary>SCRIPT_NAME for every request (<c>--root-path</c>); "" or a path starting with '/' and not ending with one.</summary>
    public string RootPath { get; init; } = "";

    public LogLevel LogLevel { get; init; } = LogLevel.Info;
    /// <summary>"-" is stderr; otherwise an absolute path (a relative one is made so in <see cref="Chdir"/>'s directory, as gunicorn's).</summary>
    public string ErrorLog { get; init; } = "-";
    /// <summary>null disables the access log; "-" is stdout; otherwise an absolute path, as <see cref="ErrorLog"/>.</summary>
    public string? AccessLog { get; init; }
    /// <summary>The access log's line (<c>--access-logformat</c>), gunicorn's default unless given.</summary>
    public Wsgi.AccessLogFormat AccessLogFormat { get; init; } = Wsgi.AccessLogFormat.Default;

    /// <summary>Request bodies up to this size are read completely before the application is called.</summary>
    public int BodyBufferSize { get; init; } = 1024 * 1024;

    /// <summary>Recycle a worker after this many requests (plus jitter); 0 disables.</summary>
    public int MaxRequests { get; init; }
    public int MaxRequestsJitter { get; init; }
    /// <summary>Recycle a worker whose RSS exceeds this many MB; 0 disables.</summary>
    public int MaxWorkerMemory { get; init; }
    /// <summary>Absolute path of the pid file (a relative one is in <see cref="Chdir"/>'s directory), or null.</summary>
    public string? PidFile { get; init; }
    /// <summary>Process-title name (<c>--name</c>), or null for the APP.</summary>
    public string? Name { get; init; }
    /// <summary>Accepted for gunicorn compatibility; workers are started, not forked, so each imports the app anyway.</summary>
    public bool Preload { get; init; }
    /// <summary>umask in effect while binding unix sockets.</summary>
    public int Umask { get; init; }
    /// <summary>--daemon: the master runs detached, in its own session, stdio on /dev/null once serving.</summary>
    public bool Daemon { get; init; }
    /// <summary>--user: the workers' user, a name or a number, resolved by the master at start.</summary>
    public string? User { get; init; }
    /// <summary>--group: the workers' only group, a name or a number.</summary>
    public string? Group { get; init; }

    public int Timeout { get; init; } = 30;
    public int GracefulTimeout { get; init; } = 30;
    public int KeepAlive { get; init; } = 2;
    public int Backlog { get; init; } = 2048;
    /// <summary>Seconds a client gets to send a complete request head (<c>--header-timeout</c>).</summary>
    public int HeaderTimeout { get; init; } = 20;
    /// <summary>Bytes per second a request body must keep up after a grace period; 0 disables (<c>--min-request-body-rate</c>).</summary>
    public int MinRequestBodyRate { get; init; } = 240;
    /// <summary>Connections one worker serves at once; 0 means unlimited (<c>--max-connections</c>).</summary>
    public int MaxConnections { get; init; } = 10_000;

    public int LimitRequestLine { get; init; } = 4094;
    public int LimitRequestFields { get; init; } = 100;
    public int LimitRequestFieldSize { get; init; } = 8190;
    /// <summary>0 means unlimited.</summary>
    public long LimitRequestBody { get; init; }

    /// <summary>
    /// Peers whose X-Forwarded-*, Forwarded and PROXY protocol headers are believed. gunicorn's default,
    /// which its FORWARDED_ALLOW_IPS environment variable overrides.
    /// </summary>
    public Wsgi.TrustedProxies ForwardedAllowIps { get; init; } = Wsgi.TrustedProxies.Default;
    public bool ProxyProtocol { get; init; }
    /// <summary>
    /// Peers whose PROXY protocol header is accepted (<c>--proxy-allow-from</c>, gunicorn's proxy_allow_ips);
    /// null for the <see cref="ForwardedAllowIps"/> peers.
    /// </summary>
    public Wsgi.TrustedProxies? ProxyAllowFrom { get; init; }

    /// <summary>Where StatsD metrics go (<c>--statsd-host</c>: HOST:PORT or unix:PATH with PATH absolute), or null for none.</summary>
    public string? StatsdHost { get; init; }
    public string StatsdPrefix { get; init; } = "";
    public string DogstatsdTags { get; init; } = "";

    /// <summary>Absolute path of the PEM certificate (chain), or null for cleartext listeners (<c>--certfile</c>).</summary>
    public string? CertFile { get; init; }
    /// <summary>Absolute path of its PEM private key, or null when the key is in <see cref="CertFile"/> (<c>--keyfile</c>).</summary>
    public string? KeyFile { get; init; }

    /// <summary><c>--reload</c>: workers are replaced when a file their Python imported changes.</summary>
    public bool Reload { get; init; }
    /// <summary>Absolute paths of more files <c>--reload</c> watches (<c>--reload-extra-file</c>).</summary>
    public IReadOnlyList<string> ReloadExtraFiles { get; init; } = [];

    /// <summary><c>--check-config</c>: load the application, report, exit; serve nothing.</summary>
    public bool CheckConfig { get; init; }

    /// <summary><c>-c/--config</c> as given, or null for ./gunicorn.conf.py when it exists.</summary>
    public string? Config { get; init; }

    /// <summary>Absolute path of the PEM authorities client certificates must chain to (<c>--ca-certs</c>), or null.</summary>
    public string? CaCerts { get; init; }
    /// <summary><c>--cert-reqs</c>: 0 asks for no client certificate, 1 verifies one if given, 2 requires one.</summary>
    public Http.Kestrel.ClientCertificates CertReqs { get; init; }

    /// <summary>
    /// <c>-k/--worker-class</c> as given, or null. Osprey has one kind of worker (threads calling the
    /// application); gunicorn's sync and gthread are that, any other class is reported at start.
    /// </summary>
    public string? WorkerClass { get; init; }
    /// <summary><c>--capture-output</c>: the workers' and the master's stdout and stderr (fds 1 and 2) go to the error log file.</summary>
    public bool CaptureOutput { get; init; }
    /// <summary><c>-R/--enable-stdio-inheritance</c>: with --daemon, keep the command's stdin, stdout and stderr instead of /dev/null.</summary>
    public bool EnableStdioInheritance { get; init; }
    /// <summary><c>--reuse-port</c>: another process may bind the same TCP port (SO_REUSEPORT), so the port-in-use check is skipped.</summary>
    public bool ReusePort { get; init; }
    /// <summary>False with <c>--no-sendfile</c>: wsgi.file_wrapper responses are read and written, not sent with sendfile.</summary>
    public bool Sendfile { get; init; } = true;
    /// <summary>
    /// <c>--initgroups</c>: workers switching to --user also take the user's supplementary groups
    /// (initgroups(3)), not only the one group.
    /// </summary>
    public bool Initgroups { get; init; }
    /// <summary><c>--print-config</c>: print the settings, check the application as --check-config does, exit.</summary>
    public bool PrintConfig { get; init; }
    /// <summary><c>--worker-tmp-dir</c> (absolute, and existing), accepted for gunicorn compatibility: Osprey's workers keep no heartbeat file.</summary>
    public string? WorkerTmpDir { get; init; }
    /// <summary><c>--reload-engine</c> (auto, poll or inotify), accepted for gunicorn compatibility: --reload polls.</summary>
    public string ReloadEngine { get; init; } = "auto";

    /// <summary>Every listener speaks TLS.</summary>
    public bool Tls => CertFile is not null;
}
