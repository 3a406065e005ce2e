using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>The example applications of examples/ and how to serve them (under Osprey or under gunicorn).</summary>
public static class Examples
{
    public static string FlaskDir => Path.Combine(RepoPaths.Root, "examples", "flask_app");

    public static string DjangoDir => Path.Combine(RepoPaths.Root, "examples", "django_site");

    public const string FlaskApp = "app:app";

    public const string DjangoApp = "site_project.wsgi:application";

    public const string DjangoUser = "admin";

    public const string DjangoPassword = "osprey-admin-test";

    public const string FlaskUser = "demo";

    public const string FlaskPassword = "demo-pass";

    /// <summary>Where tests put what they want kept (screenshots): tests/artifacts (not committed, recreated by scripts/test.sh).</summary>
    public static string ArtifactsDir
    {
        get
        {
            var dir = Path.Combine(RepoPaths.Root, "tests", "artifacts", "real-apps");
            Directory.CreateDirectory(dir);
            return dir;
        }
    }

    /// <summary>
    /// A fresh data directory for one Django server (its own sqlite database and media), migrated, with the superuser
    /// created and the static files collected, by the example's own setup step (prepare.py).
    /// </summary>
    public static async Task<TempDir> PrepareDjangoAsync()
    {
        var data = TempDir.Create("osprey-django-");
        var environment = DjangoEnvironment(data.Path);
        var result = await RunAsync(RepoPaths.SystemPython, ["prepare.py"], DjangoDir, environment, TimeSpan.FromSeconds(90));
        if (result.ExitCode != 0)
        {
            data.Dispose();
            throw new InvalidOperationException($"examples/django_site/prepare.py failed: {result}");
        }
        return data;
    }

    public static Dictionary<string, string?> DjangoEnvironment(string dataDir) => new()
    {
        ["DJANGO_SITE_DATA"] = dataDir,
        ["DJANGO_SUPERUSER_PASSWORD"] = DjangoPassword,
        ["DJANGO_SUPERUSER_USERNAME"] = DjangoUser,
        ["PYTHONDONTWRITEBYTECODE"] = "1",
    };

    public static Dictionary<string, string?> FlaskEnvironment(string dataDir) => new()
    {
        ["FLASK_APP_DATA"] = dataDir,
        ["FLASK_APP_USERS"] = $"{FlaskUser}:{FlaskPassword}",
        ["PYTHONDONTWRITEBYTECODE"] = "1",
    };

    public static Task<OspreyServer> StartOspreyAsync(string engine, string chdir, string app,
        IReadOnlyDictionary<string, string?> environment) =>
        OspreyServer.StartAsync(new OspreyServerOptions
        {
            Engine = engine,
            App = app,
            Chdir = chdir,
            Python = RepoPaths.SystemPython,
            Args = ["--threads", "4"],
            Environment = environment,
        });

    public static async Task<ProcessResult> RunAsync(string file, IEnumerable<string> args, string workingDirectory,
        IReadOnlyDictionary<string, string?> environment, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        foreach (var (key, value) in environment)
        {
            psi.Environment[key] = value;
        }
        using var process = Process.Start(psi)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', psi.ArgumentList)} still running after {timeout.TotalSeconds} s");
        }
        return new ProcessResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Deterministic pseudo-random bytes (incompressible, every byte value).</summary>
    public static byte[] Payload(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public static string Sha256(byte[] data) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(data));
}

/// <summary>
/// The oracle: the same application under Debian's gunicorn (sync worker, as `gunicorn APP` runs by default), on
/// 127.0.0.1 and a free port. Dispose kills it.
/// </summary>
public sealed class GunicornServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly LogBuffer _stderr = new();

    private GunicornServer(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }

    public string ErrorLog => _stderr.Text;

    public static async Task<GunicornServer> StartAsync(string chdir, string app, IReadOnlyDictionary<string, string?> environment)
    {
        var port = OspreyServer.GetFreePort();
        var psi = new ProcessStartInfo(RepoPaths.SystemPython)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in (string[])["-m", "gunicorn", "-b", $"127.0.0.1:{port}", "--chdir", chdir, "--workers", "1",
                     "--timeout", "60", "--graceful-timeout", "1", app])
        {
            psi.ArgumentList.Add(arg);
        }
        psi.Environment.Remove("VIRTUAL_ENV");
        foreach (var (key, value) in environment)
        {
            psi.Environment[key] = value;
        }
        var process = Process.Start(psi)!;
        var server = new GunicornServer(process, port);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                server._stderr.AppendLine(e.Data);
            }
        };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            if (process.HasExited)
            {
                process.WaitForExit();
                var log = server.ErrorLog;
                await server.DisposeAsync();
                throw new InvalidOperationException($"gunicorn exited with {process.ExitCode} before listening:\n{log}");
            }
            // Gunicorn's arbiter binds before the worker imports the app; the log line says when the worker is up.
            if (server.ErrorLog.Contains("Booting worker", StringComparison.Ordinal) && await CanConnectAsync(port))
            {
                return server;
            }
            if (DateTime.UtcNow > deadline)
            {
                var log = server.ErrorLog;
                await server.DisposeAsync();
                throw new TimeoutException($"gunicorn did not listen on {port} within 30 s:\n{log}");
            }
            await Task.Delay(50);
        }
    }

    private static async Task<bool> CanConnectAsync(int port)
    {
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync()
    {
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
        }
        _process.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>HttpClient over a CookieContainer, redirects not followed (the tests assert on them).</summary>
public sealed class Browserless : IDisposable
{
    public Browserless(Uri baseAddress)
    {
        Cookies = new CookieContainer();
        Client = new HttpClient(new SocketsHttpHandler
        {
            CookieContainer = Cookies,
            UseCookies = true,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
        })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public HttpClient Client { get; }

    public CookieContainer Cookies { get; }

    public string? Cookie(string name) => Cookies.GetCookies(Client.BaseAddress!)[name]?.Value;

    public async Task<(HttpResponseMessage Response, string Body)> GetAsync(string path)
    {
        var response = await Client.GetAsync(path);
        return (response, await response.Content.ReadAsStringAsync());
    }

    public async Task<(HttpResponseMessage Response, string Body)> PostFormAsync(string path, IEnumerable<KeyValuePair<string, string>> fields)
    {
        using var content = new FormUrlEncodedContent(fields);
        var response = await Client.PostAsync(path, content);
        return (response, await response.Content.ReadAsStringAsync());
    }

    public async Task<(HttpResponseMessage Response, string Body)> PostAsync(string path, HttpContent content)
    {
        var response = await Client.PostAsync(path, content);
        return (response, await response.Content.ReadAsStringAsync());
    }

    public void Dispose() => Client.Dispose();
}

internal static class ResponseExtensions
{
    public static string Describe(this HttpResponseMessage response, string body)
    {
        var sb = new StringBuilder();
        sb.Append((int)response.StatusCode).Append(' ').Append(response.ReasonPhrase).Append('\n');
        foreach (var (k, v) in response.Headers)
        {
            sb.Append(k).Append(": ").Append(string.Join(", ", v)).Append('\n');
        }
        foreach (var (k, v) in response.Content.Headers)
        {
            sb.Append(k).Append(": ").Append(string.Join(", ", v)).Append('\n');
        }
        sb.Append(body.Length > 3000 ? body[..3000] + "..." : body);
        return sb.ToString();
    }

    public static string? Location(this HttpResponseMessage response) => response.Headers.Location?.OriginalString;
}
