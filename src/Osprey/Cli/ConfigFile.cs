using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Osprey.Cli;

/// <summary>gunicorn's configuration file, turned into command-line arguments that the real command line overrides.</summary>
/// <param name="Path">The file as named (or the default's name).</param>
/// <param name="Arguments">Options, and the APP when the file sets <c>wsgi_app</c>, in command-line form.</param>
/// <param name="Warnings">Settings the file makes that Osprey does not carry out, one line each.</param>
public sealed record ConfigArguments(string Path, IReadOnlyList<string> Arguments, IReadOnlyList<string> Warnings)
{
    /// <summary>The file's text for the workers, which run its worker hooks; null when it defines none.</summary>
    public HookSource? Hooks { get; init; }

    /// <summary>The file's text for the master's hook process; null when it defines no master hook.</summary>
    public HookSource? MasterHooks { get; init; }
}

/// <summary>
/// The configuration's text as the master read it (base64 of the file's bytes, or of the module's
/// for <c>python:MODULE</c>), which the workers and the master's hook process run again for the hooks.
/// </summary>
public sealed record HookSource(string Path, string SourceBase64);

/// <summary>
/// Reads a gunicorn configuration file (<c>-c FILE</c>, or <c>./gunicorn.conf.py</c> when there is one,
/// as gunicorn does). The file is Python, so the chosen interpreter runs it, in a process of its own
/// (the master embeds no Python), and reports its top-level names as JSON; those that are gunicorn
/// settings become the equivalent options.
/// </summary>
public static class ConfigFile
{
    public const string DefaultName = "gunicorn.conf.py";

    /// <summary>Hands the arguments from the master to its workers, which must not run the file again (it could differ by then).</summary>
    public const string WorkerVariable = "OSPREY_CONFIG_ARGUMENTS";

    /// <summary>Hands the file's text to the workers when it defines worker hooks (<see cref="HookSource"/>).</summary>
    public const string HooksVariable = "OSPREY_CONFIG_HOOKS";

    private const string SourceKey = "osprey source";

    // A variable's text is limited to 128 KiB (MAX_ARG_STRLEN); a worker would not start beyond it.
    private const int MaxHookSourceLength = 96 * 1024;

    /// <summary>The hooks gunicorn calls in a worker, which Osprey's workers call too (they have Python).</summary>
    private static readonly HashSet<string> WorkerHooks = new(StringComparer.Ordinal)
    {
        "post_fork", "post_worker_init", "worker_exit", "pre_request", "post_request", "worker_int", "worker_abort",
    };

    /// <summary>The hooks gunicorn's master calls, which Osprey's master has a Python process of its own call.</summary>
    private static readonly HashSet<string> MasterHookNames = new(StringComparer.Ordinal)
    {
        "on_starting", "when_ready", "pre_fork", "child_exit", "nworkers_changed", "on_reload", "on_exit", "pre_exec",
    };

    // Runs the file as gunicorn does (exec with __file__ set, in the current directory) and prints
    // every public top-level name: JSON-able values as they are, callables (server hooks) as a marker.
    // The settings leave on a copy of stdout; whatever the file itself writes to stdout (print, os.write(1, ...),
    // a subprocess) goes to stderr, which the caller shows, so that it cannot corrupt them.
    private const string Reader = """
        import base64, json, os, sys, types
        settings_channel = os.fdopen(os.dup(1), "w")
        sys.stdout.flush()
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        path = sys.argv[1]
        out = {}
        source = None
        if path.startswith("python:"):
            import importlib
            module = importlib.import_module(path[len("python:"):])
            namespace = vars(module)
            module_file = getattr(module, "__file__", None) or ""
            if module_file.endswith(".py"):
                with open(module_file, "rb") as f:
                    source = f.read()
        else:
            namespace = {"__file__": path, "__name__": "__config__"}
            with open(path, "rb") as f:
                source = f.read()
            exec(compile(source, path, "exec"), namespace)
        if source is not None:
            # For the workers' hooks. Not a Python name, so no setting of the file's can clash with it.
            out["osprey source"] = base64.b64encode(source).decode("ascii")
        for name, value in namespace.items():
            if name.startswith("_") or isinstance(value, types.ModuleType):
                continue
            if callable(value):
                out[name] = {"osprey-callable": True}
                continue
            try:
                json.dumps(value)
                out[name] = value
            except (TypeError, ValueError):
                out[name] = {"osprey-repr": repr(value)}
        sys.stderr.flush()
        settings_channel.write(json.dumps(out))
        settings_channel.flush()
        """;

    // gunicorn's settings (gunicorn.config.KNOWN_SETTINGS, 20.x to 23.x) that Osprey has no equivalent for.
    // Any other name in the file that is not a setting is the file's own business, as in gunicorn. Not
    // listed, so accepted without a word: config, and those the command line has (see Read).
    private static readonly HashSet<string> Unsupported = new(StringComparer.Ordinal)
    {
        "spew", "check_config", "print_config",
        "tmp_upload_dir", "secure_scheme_headers",
        "logger_class", "logconfig", "logconfig_dict",
        "logconfig_json", "syslog_addr", "syslog", "syslog_prefix", "syslog_facility",
        "default_proc_name", "paste", "raw_paste_global_conf",
"ssl_version", "suppress_ragged_eofs", "do_handshake_on_connect",
        "ciphers", "ssl_context", "strip_header_spaces", "tolerate_dangerous_framing", "permit_obsolete_folding",
        "permit_unconventional_http_method", "permit_unconventional_http_version", "casefold_http_method",
        "header_map", "forwarder_headers",
    };

    // Server hooks are Python callables that gunicorn's master and workers call. Those in WorkerHooks
    // and MasterHookNames are run; the one tied to gunicorn's internals (ssl_context) is not.
    private static readonly HashSet<string> Hooks = new(StringComparer.Ordinal)
    {
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_int",
        "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed",
        "on_exit", "ssl_context",
    };

    /// <summary>
    /// The options as the master takes them, at start and again at a reload (HUP): the command line
    /// names the file (<c>-c</c>) and the interpreter that runs it, and overrides what the file sets.
    /// <paramref name="config"/> is the file's settings when one was read; <paramref name="output"/>
    /// is what the file wrote (print() included), with its traceback when running it failed (the outcome
    /// is then an error with exit code 1).
    /// </summary>
    public static ParseOutcome ReadOptions(IReadOnlyList<string> args, out ConfigArguments? config, out string? output)
    {
        config = null;
        output = null;
        ParseOutcome first = CommandLine.Parse(args, requireApp: false);
        if (first is not ParseOutcome.Run { Options: var early })
        {
            return first;
        }
        if (Choose(early.Config) is string path)
        {
            string interpreter;
            try
            {
                interpreter = Python.PythonInstallation.ChooseInterpreter(early.Python);
            }
            catch (Python.PythonStartupException e)
            {
                return new ParseOutcome.Error($"cannot read config file '{path}': {e.Message}", 1);
            }
            config = Load(path, interpreter, out string? error, out output, out int exitCode);
            if (config is null)
            {
                return new ParseOutcome.Error(error ?? $"config file '{path}' could not be read", exitCode);
            }
        }
        return CommandLine.Parse(args, config);
    }

    private const string ModulePrefix = "python:";

    private static bool IsModuleName(ReadOnlySpan<char> name)
    {
        if (name.IsEmpty)
        {
            return false;
        }
        foreach (Range part in name.Split('.'))
        {
            ReadOnlySpan<char> identifier = name[part];
            if (identifier.IsEmpty || char.IsAsciiDigit(identifier[0]))
            {
                return false;
            }
            foreach (char c in identifier)
            {
                if (!(char.IsLetterOrDigit(c) || c == '_'))
                {
                    return false;
                }
            }
        }
        return true;
    }

    private const string FilePrefix = "file:";

    /// <summary>The file to read: <paramref name="explicitPath"/>, else ./gunicorn.conf.py if it exists, else none.</summary>
    public static string? Choose(string? explicitPath) =>
        explicitPath is null ? (File.Exists(DefaultName) ? DefaultName : null) : WithoutFilePrefix(explicitPath);

    /// <summary>gunicorn's -c takes PATH, file:PATH or python:MODULE.</summary>
    private static string WithoutFilePrefix(string path) =>
        path.StartsWith(FilePrefix, StringComparison.Ordinal) && path.Length > FilePrefix.Length ? path[FilePrefix.Length..] : path;

    /// <summary>
    /// Runs the file with <paramref name="interpreter"/>; an error is one line. <paramref name="output"/> is
    /// what the file wrote to stdout and stderr, and its traceback if it failed; null if nothing.
    /// </summary>
    public static ConfigArguments? Load(string path, string interpreter, out string? error, out string? output) =>
        Load(path, interpreter, out error, out output, out _);

    /// <param name="exitCode">
    /// When the file cannot be read, the command's exit code: the file's own when it ended the interpreter
    /// (<c>sys.exit(3)</c> is 3, and <c>sys.exit(0)</c> 0, as gunicorn, in which the file's SystemExit ends the
    /// command); 1 otherwise, as for a file that raises.
    /// </param>
    public static ConfigArguments? Load(string path, string interpreter, out string? error, out string? output, out int exitCode)
    {
        error = null;
        output = null;
        exitCode = 1;
        path = WithoutFilePrefix(path);
        if (path.StartsWith(ModulePrefix, StringComparison.Ordinal))
        {
            // gunicorn's python:MODULE: the module's names are the settings. Imported as
            // `python -c` imports, so the current directory is on the path.
            if (!IsModuleName(path.AsSpan(ModulePrefix.Length)))
            {
                error = $"--config: '{path}' does not name a module (python:package.module)";
                return null;
            }
        }
        else if (!File.Exists(path))
        {
            error = $"--config: file '{path}' does not exist";
            return null;
        }
        var start = new ProcessStartInfo(interpreter)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(Reader);
        start.ArgumentList.Add(path);
        string json;
        string errors;
        try
        {
            using Process process = Process.Start(start) ?? throw new Win32Exception();
            Task<string> errorTask = process.StandardError.ReadToEndAsync();
            json = process.StandardOutput.ReadToEnd();
            errors = errorTask.GetAwaiter().GetResult();
            if (!process.WaitForExit(30_000))
            {
                process.Kill(entireProcessTree: true);
                error = $"config file '{path}' did not finish running within 30 s";
                return null;
            }
            output = errors.TrimEnd() is { Length: > 0 } written ? written : null;
            if (process.ExitCode != 0)
            {
                string last = output is null ? $"exit code {process.ExitCode}" : output[(output.LastIndexOf('\n') + 1)..];
                error = $"config file '{path}' failed: {last}";
                exitCode = process.ExitCode;
                return null;
            }
            if (json.Length == 0)
            {
                // The reader writes the settings last: the file ended the interpreter first, successfully.
                error = $"config file '{path}' exited with code 0 (sys.exit) before its settings were read; nothing is started";
                exitCode = 0;
                return null;
            }
        }
        catch (Win32Exception)
        {
            error = $"cannot run Python interpreter '{interpreter}' to read config file '{path}'";
            return null;
        }
        try
        {
            using JsonDocument settings = JsonDocument.Parse(json);
            return Translate(path, settings.RootElement, out error);
        }
        catch (JsonException)
        {
            error = $"config file '{path}': its settings could not be read";
            return null;
        }
    }

    /// <summary>Sets (or, without a file, clears) what the master's next workers inherit from the configuration.</summary>
    public static void HandToWorkers(ConfigArguments? config)
    {
        Environment.SetEnvironmentVariable(WorkerVariable, config is null ? null : ToWorkerVariable(config.Arguments));
        Environment.SetEnvironmentVariable(HooksVariable, config?.Hooks is { } hooks ? ToHooksVariable(hooks) : null);
    }

    public static string ToHooksVariable(HookSource hooks) => ToWorkerVariable([hooks.Path, hooks.SourceBase64]);

    /// <summary>The hooks the master handed down (<see cref="HooksVariable"/>), or null.</summary>
    public static HookSource? HooksFromVariable(string? text)
    {
        return FromWorkerVariable(text) is [string path, string source] ? new HookSource(path, source) : null;
    }

    /// <summary>The arguments the master handed down (<see cref="WorkerVariable"/>), or null.</summary>
    public static IReadOnlyList<string>? FromWorkerVariable(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }
        using JsonDocument document = JsonDocument.Parse(text);
        var arguments = new List<string>();
        foreach (JsonElement item in document.RootElement.EnumerateArray())
        {
            arguments.Add(item.GetString() ?? "");
        }
        return arguments;
    }

    public static string ToWorkerVariable(IReadOnlyList<string> arguments)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (string argument in arguments)
            {
                writer.WriteStringValue(argument);
            }
            writer.WriteEndArray();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    internal static ConfigArguments? Translate(string path, JsonElement settings, out string? error)
    {
        error = null;
        var arguments = new List<string>();
        var warnings = new List<string>();
        var hooks = new List<string>();
        var ignored = new List<string>();
        string? app = null;
        string? source = null;
        var workerHooks = new List<string>();
        var masterHooks = new List<string>();
        foreach (JsonProperty setting in settings.EnumerateObject())
        {
            if (setting.Name == SourceKey)
            {
                source = setting.Value.GetString();
                continue;
            }
            // As gunicorn, which looks a name up as written (so WORKERS = 3 is the file's own business) before it lower-cases it.
            string name = setting.Name;
            JsonElement value = setting.Value;
            if (IsCallable(value))
            {
                if (WorkerHooks.Contains(name))
                {
                    workerHooks.Add(name);
                }
                else if (MasterHookNames.Contains(name))
                {
                    masterHooks.Add(name);
                }
                else if (Hooks.Contains(name))
                {
                    hooks.Add(name);
                }
                continue;
            }
            string? problem = name switch
            {
                "wsgi_app" => Text(value, out app),
                "bind" => Each(value, "--bind", arguments),
                "raw_env" => Each(value, "--env", arguments),
                "workers" => One(value, "--workers", arguments),
                "threads" => One(value, "--threads", arguments),
                "worker_connections" => One(value, "--max-connections", arguments),
                "timeout" => One(value, "--timeout", arguments),
                "graceful_timeout" => One(value, "--graceful-timeout", arguments),
                "keepalive" => One(value, "--keep-alive", arguments),
                "max_requests" => One(value, "--max-requests", arguments),
                "max_requests_jitter" => One(value, "--max-requests-jitter", arguments),
                "limit_request_line" => One(value, "--limit-request-line", arguments),
                "limit_request_fields" => One(value, "--limit-request-fields", arguments),
                "limit_request_field_size" => One(value, "--limit-request-field_size", arguments),
                "backlog" => One(value, "--backlog", arguments),
                "umask" => One(value, "--umask", arguments),
                "loglevel" => One(value, "--log-level", arguments),
                "errorlog" => One(value, "--error-logfile", arguments),
                "accesslog" => One(value, "--access-logfile", arguments),
                "access_log_format" => One(value, "--access-logformat", arguments),
                "pidfile" => One(value, "--pid", arguments),
                "proc_name" => One(value, "--name", arguments),
                "statsd_host" => One(value, "--statsd-host", arguments),
                "statsd_prefix" => One(value, "--statsd-prefix", arguments),
                "dogstatsd_tags" => One(value, "--dogstatsd-tags", arguments),
                "user" => One(value, "--user", arguments),
                "group" => One(value, "--group", arguments),
                "chdir" => One(value, "--chdir", arguments),
                "certfile" => One(value, "--certfile", arguments),
                "keyfile" => One(value, "--keyfile", arguments),
                "ca_certs" => One(value, "--ca-certs", arguments),
                "cert_reqs" => One(value, "--cert-reqs", arguments),
                "pythonpath" => One(value, "--pythonpath", arguments),
                "forwarded_allow_ips" => Joined(value, "--forwarded-allow-ips", arguments),
                "proxy_allow_ips" => Joined(value, "--proxy-allow-from", arguments),
                "preload_app" => Flag(value, "--preload", arguments),
                "daemon" => Flag(value, "--daemon", arguments),
                "proxy_protocol" => Flag(value, "--proxy-protocol", arguments),
                "reload" => Flag(value, "--reload", arguments),
                "reload_extra_files" => Each(value, "--reload-extra-file", arguments),
                "worker_class" => One(value, "--worker-class", arguments),
                "worker_tmp_dir" => One(value, "--worker-tmp-dir", arguments),
                "reload_engine" => One(value, "--reload-engine", arguments),
                "capture_output" => Flag(value, "--capture-output", arguments),
                "enable_stdio_inheritance" => Flag(value, "--enable-stdio-inheritance", arguments),
                "reuse_port" => Flag(value, "--reuse-port", arguments),
                "initgroups" => Flag(value, "--initgroups", arguments),
                "disable_redirect_access_to_syslog" => Flag(value, "--disable-redirect-access-to-syslog", arguments),
                "sendfile" => InverseFlag(value, "--no-sendfile", arguments),
                _ => null,
            };
            if (problem is not null)
            {
                error = $"config file '{path}': {name}: {problem}";
                return null;
            }
            if (Unsupported.Contains(name) && IsSet(value))
            {
                ignored.Add(name);
            }
        }
        if (app is not null)
        {
            arguments.Add(app);
        }
        if (ignored.Count > 0)
        {
            warnings.Add($"{path}: not supported by Osprey, ignored: {string.Join(", ", ignored)}");
        }
        if (hooks.Count > 0)
        {
            warnings.Add($"{path}: server hooks not run by Osprey: {string.Join(", ", hooks)}");
        }
        HookSource? hookSource = null;
        if (workerHooks.Count + masterHooks.Count > 0)
        {
            if (source is null || source.Length > MaxHookSourceLength)
            {
                warnings.Add($"{path}: its text cannot be handed on (not Python source, or over 96 KiB), so its hooks are not run: {string.Join(", ", workerHooks.Concat(masterHooks))}");
            }
            else
            {
                hookSource = new HookSource(path, source);
            }
        }
        return new ConfigArguments(path, arguments, warnings)
        {
            Hooks = workerHooks.Count > 0 ? hookSource : null,
            MasterHooks = masterHooks.Count > 0 ? hookSource : null,
        };
    }

    private static bool IsCallable(JsonElement value) =>
        value.ValueKind == JsonValueKind.Object && value.TryGetProperty("osprey-callable", out _);

    /// <summary>A value other than gunicorn's "off" ones (None, False, 0, empty).</summary>
    private static bool IsSet(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.False => false,
        JsonValueKind.String => value.GetString()!.Length > 0,
        JsonValueKind.Number => value.GetRawText() is not ("0" or "0.0"),
        JsonValueKind.Array => value.GetArrayLength() > 0,
        JsonValueKind.Object => value.EnumerateObject().MoveNext(),
        _ => true,
    };

    private static string? Text(JsonElement value, out string? text)
    {
        text = null;
        switch (value.ValueKind)
        {
            case JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                text = value.GetString();
                return null;
            case JsonValueKind.Number:
                text = value.GetRawText();
                return null;
            default:
                return $"expected a string or a number, got {Describe(value)}";
        }
    }

    private static string? One(JsonElement value, string option, List<string> arguments)
    {
        if (value.ValueKind == JsonValueKind.True || value.ValueKind == JsonValueKind.False)
        {
            return $"expected a string or a number, got {Describe(value)}";
        }
        string? problem = Text(value, out string? text);
        if (text is not null)
        {
            // "--opt=value" keeps a value that starts with '-' a value.
            arguments.Add($"{option}={text}");
        }
        return problem;
    }

    private static string? Each(JsonElement value, string option, List<string> arguments)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            return One(value, option, arguments);
        }
        foreach (JsonElement item in value.EnumerateArray())
        {
            if (One(item, option, arguments) is string problem)
            {
                return problem;
            }
        }
        return null;
    }

    private static string? Joined(JsonElement value, string option, List<string> arguments)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            return One(value, option, arguments);
        }
        var parts = new List<string>();
        foreach (JsonElement item in value.EnumerateArray())
        {
            if (Text(item, out string? text) is string problem)
            {
                return problem;
            }
            if (text is not null)
            {
                parts.Add(text);
            }
        }
        arguments.Add($"{option}={string.Join(',', parts)}");
        return null;
    }

    /// <summary>A setting whose False is a flag of Osprey's (sendfile = False is --no-sendfile); None (gunicorn's default) and True add nothing.</summary>
    private static string? InverseFlag(JsonElement value, string option, List<string> arguments)
    {
        if (value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        var on = new List<string>(1);
        if (Flag(value, option, on) is string problem)
        {
            return problem;
        }
        if (on.Count == 0)
        {
            arguments.Add(option);
        }
        return null;
    }

    private static string? Flag(JsonElement value, string option, List<string> arguments)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.True:
                arguments.Add(option);
                return null;
            case JsonValueKind.False or JsonValueKind.Null:
                return null;
            // gunicorn's validate_bool also takes these strings.
            case JsonValueKind.String when value.GetString()!.Trim().ToLowerInvariant() is "true" or "1" or "yes" or "y" or "on":
                arguments.Add(option);
                return null;
            case JsonValueKind.String when value.GetString()!.Trim().ToLowerInvariant() is "false" or "0" or "no" or "n" or "off":
                return null;
            default:
                return $"expected True or False, got {Describe(value)}";
        }
    }

    private static string Describe(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.True => "True",
        JsonValueKind.False => "False",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object when value.TryGetProperty("osprey-repr", out JsonElement repr) => repr.GetString() ?? "an object",
        JsonValueKind.Object => "a dict",
        _ => value.GetRawText(),
    };
}
