using System.Globalization;
using System.Text;

namespace Osprey.Cli;

/// <summary>
/// <c>--print-config</c>: every setting of a run, one line each, as gunicorn prints its own
/// (<c>name = value</c>, sorted, values as Python writes them). gunicorn's setting names where
/// Osprey has the setting; Osprey's own settings under their option's name in the same style.
/// </summary>
internal static class SettingsReport
{
    public static string Format(OspreyOptions o)
    {
        var rows = new List<(string Name, string Value)>
        {
            ("access_log_format", Quote(o.AccessLogFormat.Text)),
            ("accesslog", Quote(o.AccessLog)),
            ("backlog", Number(o.Backlog)),
            // A unix socket where it will be made: relative paths are in --chdir's directory.
            ("bind", List(o.Binds.Select(b => b is BindAddress.Unix unix ? "unix:" + unix.Path : b.Original))),
            ("body_buffer_size", Number(o.BodyBufferSize)),
            ("ca_certs", Quote(o.CaCerts)),
            ("capture_output", Bool(o.CaptureOutput)),
            ("cert_reqs", Number((int)o.CertReqs)),
            ("certfile", Quote(o.CertFile)),
            ("chdir", Quote(o.Chdir ?? Directory.GetCurrentDirectory())),
            ("config", Quote(o.Config)),
            ("daemon", Bool(o.Daemon)),
            ("dogstatsd_tags", Quote(o.DogstatsdTags)),
            ("enable_stdio_inheritance", Bool(o.EnableStdioInheritance)),
            ("engine", Quote(o.Engine.ToString().ToLowerInvariant())),
            ("errorlog", Quote(o.ErrorLog)),
            ("forwarded_allow_ips", List(o.ForwardedAllowIps.Text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))),
            ("graceful_timeout", Number(o.GracefulTimeout)),
            ("group", Quote(o.Group)),
            ("header_timeout", Number(o.HeaderTimeout)),
            ("initgroups", Bool(o.Initgroups)),
            ("keepalive", Number(o.KeepAlive)),
            ("keyfile", Quote(o.KeyFile)),
            ("limit_request_body", Number(o.LimitRequestBody)),
            ("limit_request_field_size", Number(o.LimitRequestFieldSize)),
            ("limit_request_fields", Number(o.LimitRequestFields)),
            ("limit_request_line", Number(o.LimitRequestLine)),
            ("loglevel", Quote(o.LogLevel.ToString().ToLowerInvariant())),
            ("max_requests", Number(o.MaxRequests)),
            ("max_requests_jitter", Number(o.MaxRequestsJitter)),
            ("max_worker_memory", Number(o.MaxWorkerMemory)),
            ("min_request_body_rate", Number(o.MinRequestBodyRate)),
            ("pidfile", Quote(o.PidFile)),
            ("preload_app", Bool(o.Preload)),
            ("proc_name", Quote(o.Name)),
            ("proxy_allow_ips", List((o.ProxyAllowFrom ?? o.ForwardedAllowIps).Text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))),
            ("proxy_protocol", Bool(o.ProxyProtocol)),
            ("python", Quote(o.Python)),
            ("pythonpath", Quote(o.PythonPath.Count == 0 ? null : string.Join(',', o.PythonPath))),
            ("raw_env", List(o.Environment.Select(e => $"{e.Key}={e.Value}"))),
            ("reload", Bool(o.Reload)),
            ("reload_engine", Quote(o.ReloadEngine)),
            ("reload_extra_files", List(o.ReloadExtraFiles)),
            ("reuse_port", Bool(o.ReusePort)),
            ("root_path", Quote(o.RootPath)),
            ("sendfile", Bool(o.Sendfile)),
            ("statsd_host", Quote(o.StatsdHost)),
            ("statsd_prefix", Quote(o.StatsdPrefix)),
            ("threads", Number(o.Threads)),
            ("timeout", Number(o.Timeout)),
            ("umask", Number(o.Umask)),
            ("user", Quote(o.User)),
            ("worker_class", Quote(o.WorkerClass ?? (o.Threads > 1 ? "gthread" : "sync"))),
            ("worker_connections", Number(o.MaxConnections)),
            ("worker_tmp_dir", Quote(o.WorkerTmpDir)),
            ("workers", Number(o.Workers)),
            ("wsgi_app", Quote(o.App)),
        };
        rows.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        int width = rows.Max(r => r.Name.Length);
        var text = new StringBuilder();
        foreach ((string name, string value) in rows)
        {
            text.Append(name.PadRight(width)).Append(" = ").Append(value).Append('\n');
        }
        return text.ToString();
    }

    private static string Number(long n) => n.ToString(CultureInfo.InvariantCulture);

    private static string Bool(bool b) => b ? "True" : "False";

    private static string List(IEnumerable<string> items) => "[" + string.Join(", ", items.Select(i => Quote(i))) + "]";

    /// <summary>As Python's repr of a str (or None): single quotes unless the text has one and no double quote.</summary>
    private static string Quote(string? text)
    {
        if (text is null)
        {
            return "None";
        }
        char quote = text.Contains('\'', StringComparison.Ordinal) && !text.Contains('"', StringComparison.Ordinal) ? '"' : '\'';
        var result = new StringBuilder(text.Length + 2).Append(quote);
        foreach (char c in text)
        {
            switch (c)
            {
                case '\\': result.Append("\\\\"); break;
                case '\n': result.Append("\\n"); break;
                case '\r': result.Append("\\r"); break;
                case '\t': result.Append("\\t"); break;
                default:
                    if (c == quote) result.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) result.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:x2}");
                    else result.Append(c);
                    break;
            }
        }
        return result.Append(quote).ToString();
    }
}
