using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Osprey.Tests.Infrastructure;

/// <summary>How to start one server process.</summary>
public sealed record OspreyServerOptions
{
    /// <summary>APP argument: <c>module:app</c>, <c>module</c>, <c>module:factory()</c>...</summary>
    public required string App { get; init; }

    /// <summary>Passed as <c>--engine NAME</c> when set.</summary>
    public string? Engine { get; init; }

    /// <summary>More arguments, placed before APP (e.g. <c>--threads 4</c>).</summary>
    public IReadOnlyList<string> Args { get; init; } = [];

    /// <summary>Environment changes: a null value removes the variable. VIRTUAL_ENV is removed unless given here.</summary>
    public IReadOnlyDictionary<string, string?> Environment { get; init; } = new Dictionary<string, string?>();

    /// <summary>Passed as <c>--python PATH</c>; null leaves the flag out (the server then picks an interpreter itself).</summary>
    public string? Python { get; init; } = RepoPaths.SystemPython;

    /// <summary>Passed as <c>--chdir DIR</c>; null leaves the flag out.</summary>
    public string? Chdir { get; init; } = RepoPaths.Apps;

    /// <summary>The server's working directory (where it looks for ./gunicorn.conf.py); null for the test's own.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>The osprey executable to start; null for <see cref="RepoPaths.OspreyExecutable"/>.</summary>
    public string? Executable { get; init; }

    /// <summary>Start the server with these signals ignored, as nohup or a shell's background job does (through /bin/sh's trap and exec, so the pid stays the server's).</summary>
    public IReadOnlyList<string> IgnoredSignals { get; init; } = [];
}

/// <summary>The exit code and output of a server run to completion.</summary>
public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit code {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Thread-safe text sink for a redirected stream.</summary>
public sealed class LogBuffer
{
    private readonly StringBuilder _text = new();
    private readonly Lock _lock = new();

    public void AppendLine(string line)
    {
        lock (_lock)
        {
            _text.Append(line).Append('\n');
        }
    }

    public string Text
    {
        get
        {
            lock (_lock)
            {
                return _text.ToString();
            }
        }
    }

    public int Length
    {
        get
        {
            lock (_lock)
            {
                return _text.Length;
            }
        }
    }
}

/// <summary>
/// One osprey process serving an app from tests/apps on 127.0.0.1 and a free port.
/// Its stdout and stderr (the error log) are captured. Dispose kills the process tree.
/// </summary>
public sealed class OspreyServer : IAsyncDisposable, IDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);

    private readonly Process _process;
    private readonly LogBuffer _stdout;
    private readonly LogBuffer _stderr;
    private int _disposed;

    private OspreyServer(Process process, int port, LogBuffer stdout, LogBuffer stderr, string commandLine)
    {
        _process = process;
        Port = port;
        _stdout = stdout;
        _stderr = stderr;
        CommandLine = commandLine;
    }

    public int Port { get; }

    public int ProcessId => _process.Id;

    public string CommandLine { get; }

    public Uri BaseAddress => new($"http://127.0.0.1:{Port}/");

    public bool HasExited => _process.HasExited;

    /// <summary>The server's exit code, once it has exited.</summary>
    public int ExitCode => _process.ExitCode;

    /// <summary>After the process has exited: waits until its stdout and stderr have been read to the end.</summary>
    public void WaitForOutput() => _process.WaitForExit();

    /// <summary>Everything the server wrote to stderr so far: the error log.</summary>
    public string ErrorLog => _stderr.Text;

    public string Stdout => _stdout.Text;

    /// <summary>Current end of the error log; pass to <see cref="ErrorLogSince"/> to see only what came after.</summary>
    public int ErrorLogPosition => _stderr.Length;

    public string ErrorLogSince(int position)
    {
        var text = _stderr.Text;
        return position >= text.Length ? "" : text[position..];
    }

    /// <summary>Waits until the error log (from <paramref name="from"/> on) contains <paramref name="substring"/>; returns that part of the log.</summary>
    public async Task<string> WaitForLogAsync(string substring, TimeSpan timeout, int from = 0)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var text = ErrorLogSince(from);
            if (text.Contains(substring, StringComparison.Ordinal))
            {
                return text;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"'{substring}' did not appear in the error log within {timeout.TotalSeconds} s. Error log:\n{ErrorLog}");
            }
            await Task.Delay(25).ConfigureAwait(false);
        }
    }

    public static Task<OspreyServer> StartAsync(string engine, string app, params string[] args) =>
        StartAsync(new OspreyServerOptions { Engine = engine, App = app, Args = args });

    /// <summary>Starts the server and waits until its port accepts connections (throws with its stderr if it exits first).</summary>
    public static async Task<OspreyServer> StartAsync(OspreyServerOptions options)
    {
        // A port picked by binding port 0 can, rarely, be taken by someone else before the server binds it: retry then.
        for (var attempt = 1; ; attempt++)
        {
            var port = GetFreePort();
            var server = Launch(options, port);
            try
            {
                await server.WaitUntilListeningAsync().ConfigureAwait(false);
                return server;
            }
            catch (ServerExitedException e) when (attempt < 3 && e.Stderr.Contains("in use", StringComparison.OrdinalIgnoreCase))
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }
            catch
            {
                await server.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }
    }

    public static int GetFreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        finally
        {
            listener.Stop();
        }
    }

    /// <summary>Builds the full argument list for <paramref name="options"/> listening on <paramref name="port"/>.</summary>
    public static List<string> BuildArguments(OspreyServerOptions options, int port)
    {
        var args = new List<string> { "-b", $"127.0.0.1:{port}" };
        if (options.Python is not null)
        {
            args.AddRange(["--python", options.Python]);
        }
        if (options.Chdir is not null)
        {
            args.AddRange(["--chdir", options.Chdir]);
        }
        if (options.Engine is not null)
        {
            args.AddRange(["--engine", options.Engine]);
        }
        args.AddRange(options.Args);
        // Empty: the APP comes from a configuration file's wsgi_app.
        if (options.App.Length > 0)
        {
            args.Add(options.App);
        }
        return args;
    }

    private static OspreyServer Launch(OspreyServerOptions options, int port)
    {
        var args = BuildArguments(options, port);
        var psi = CreateStartInfo(args, options.Environment);
        if (options.Executable is not null)
        {
            psi.FileName = options.Executable;
        }
        if (options.WorkingDirectory is not null)
        {
            psi.WorkingDirectory = options.WorkingDirectory;
        }
        if (options.IgnoredSignals.Count > 0)
        {
            psi.ArgumentList.Insert(0, $"trap '' {string.Join(' ', options.IgnoredSignals)}; exec \"$0\" \"$@\"");
            psi.ArgumentList.Insert(0, "-c");
            psi.ArgumentList.Insert(2, psi.FileName);
            psi.FileName = "/bin/sh";
        }
        var stdout = new LogBuffer();
        var stderr = new LogBuffer();
        var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                stdout.AppendLine(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                stderr.AppendLine(e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new OspreyServer(process, port, stdout, stderr, "osprey " + string.Join(' ', args));
    }

    public static ProcessStartInfo CreateStartInfo(IEnumerable<string> args, IReadOnlyDictionary<string, string?>? environment)
    {
        var psi = new ProcessStartInfo(RepoPaths.OspreyExecutable)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        psi.Environment.Remove("VIRTUAL_ENV");
        // gunicorn's PaaS defaults, which Osprey honours: a test says how many workers and where.
        psi.Environment.Remove("WEB_CONCURRENCY");
        psi.Environment.Remove("PORT");
        psi.Environment.Remove("GUNICORN_CMD_ARGS");
        if (environment is not null)
        {
            foreach (var (key, value) in environment)
            {
                if (value is null)
                {
                    psi.Environment.Remove(key);
                }
                else
                {
                    psi.Environment[key] = value;
                }
            }
        }
        return psi;
    }

    private async Task WaitUntilListeningAsync()
    {
        var deadline = DateTime.UtcNow + StartTimeout;
        while (true)
        {
            if (_process.HasExited)
            {
                // The no-argument WaitForExit also waits for the redirected streams to be drained.
                _process.WaitForExit();
                throw new ServerExitedException(_process.ExitCode, Stdout, ErrorLog, CommandLine);
            }
            if (await CanConnectAsync(Port).ConfigureAwait(false))
            {
                return;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{CommandLine}: port {Port} did not accept connections within {StartTimeout.TotalSeconds} s.\n--- stderr ---\n{ErrorLog}");
            }
            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    private static async Task<bool> CanConnectAsync(int port)
    {
        using var client = new TcpClient();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port, cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Runs osprey with <paramref name="args"/> until it exits; kills it and throws if it outlives <paramref name="timeout"/>.</summary>
    public static async Task<ProcessResult> RunToCompletionAsync(
        IEnumerable<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string?>? environment = null, string? executable = null,
        string? workingDirectory = null)
    {
        var psi = CreateStartInfo(args, environment);
        psi.FileName = executable ?? psi.FileName;
        psi.WorkingDirectory = workingDirectory ?? psi.WorkingDirectory;
        using var process = new Process { StartInfo = psi };
        process.Start();
        process.StandardInput.Close();
        var stdoutTask = process.StandardOutput.ReadToEndAsync();
        var stderrTask = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync().ConfigureAwait(false);
            throw new TimeoutException(
                $"osprey {string.Join(' ', psi.ArgumentList)} still running after {timeout.TotalSeconds} s.\n--- stdout ---\n{await stdoutTask.ConfigureAwait(false)}\n--- stderr ---\n{await stderrTask.ConfigureAwait(false)}");
        }
        return new ProcessResult(process.ExitCode, await stdoutTask.ConfigureAwait(false), await stderrTask.ConfigureAwait(false));
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // Not started or already gone.
        }
        _process.Dispose();
        SaveLog();
    }

    /// <summary>With $OSPREY_TEST_LOG_DIR set, each server's command line and error log are kept there after it stops.</summary>
    private void SaveLog()
    {
        if (Environment.GetEnvironmentVariable("OSPREY_TEST_LOG_DIR") is not { Length: > 0 } dir)
        {
            return;
        }
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, $"osprey-{Port}-{DateTime.UtcNow:HHmmssfff}.log"),
            $"{CommandLine}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{ErrorLog}");
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    public override string ToString() => CommandLine;
}

/// <summary>The server exited before it listened.</summary>
public sealed class ServerExitedException(int exitCode, string stdout, string stderr, string commandLine)
    : Exception($"{commandLine} exited with code {exitCode} before listening.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
{
    public int ExitCode { get; } = exitCode;
    public string Stdout { get; } = stdout;
    public string Stderr { get; } = stderr;
}
