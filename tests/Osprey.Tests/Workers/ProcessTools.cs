using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Workers;

/// <summary>Signals, the process tree and a client load loop for the process-model tests.</summary>
internal static class ProcessTools
{
    public const int SIGHUP = 1;
    public const int SIGINT = 2;
    public const int SIGQUIT = 3;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGTTIN = 21;
    public const int SIGTTOU = 22;

    /// <summary>Waits for the master to exit, and for its output to be read to the end.</summary>
    public static async Task WaitForExitAsync(OspreyServer server, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!server.HasExited)
        {
            Assert.True(DateTime.UtcNow < deadline, "the master did not exit:\n" + server.ErrorLog);
            await Task.Delay(50);
        }
        // Exited is not the same as all of its output read: the last log lines may still be in the pipe.
        server.WaitForOutput();
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);

    public static void Signal(int pid, int signal) =>
        Assert.True(SysKill(pid, signal) == 0, $"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");

    public static bool IsAlive(int pid) =>
        File.Exists($"/proc/{pid}/stat") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);

    /// <summary>Live (not zombie) child processes of <paramref name="parent"/>, from /proc.</summary>
    public static List<int> Children(int parent)
    {
        var children = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (fields[0] != "Z" && int.Parse(fields[1], CultureInfo.InvariantCulture) == parent)
                {
                    children.Add(pid);
                }
            }
            catch (IOException)
            {
                // Gone while we looked.
            }
        }
        return children;
    }

    /// <summary>Waits until <paramref name="parent"/> has exactly <paramref name="count"/> worker children; returns them.</summary>
    public static async Task<List<int>> WaitForChildrenAsync(int parent, int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var children = Children(parent);
            if (children.Count == count)
            {
                return children;
            }
            Assert.True(DateTime.UtcNow < deadline, $"expected {count} children of {parent}, have {children.Count}: {string.Join(",", children)}");
            await Task.Delay(50);
        }
    }

    public static Task<OspreyServer> StartAsync(string engine, params string[] args) =>
        OspreyServer.StartAsync(new OspreyServerOptions { Engine = engine, App = "workers_app:app", Args = args });

    /// <summary>GET over a new connection (Connection: close): which worker pid answered, or null on any failure.</summary>
    public static async Task<int?> GetPidAsync(HttpClient client, int port, string target = "/pid") =>
        (await TryGetPidAsync(client, port, target)).Pid;

    /// <summary>
    /// Starts <paramref name="count"/> requests for workers_app's /slow and returns once the application has
    /// begun every one (it says so in the error log). A fixed delay instead is a race on a loaded machine,
    /// where a connection made a second ago may not have been accepted yet.
    /// </summary>
    public static async Task<Task<(int? Pid, string? Error)>[]> StartSlowRequestsAsync(OspreyServer server, HttpClient client, int count, int seconds)
    {
        const string Started = "slow request started";
        int before = Occurrences(server.ErrorLog, Started);
        var requests = Enumerable.Range(0, count).Select(_ => TryGetPidAsync(client, server.Port, $"/slow?s={seconds}")).ToArray();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (Occurrences(server.ErrorLog, Started) < before + count)
        {
            var failed = requests.Where(r => r.IsCompleted && r.Result.Pid is null).Select(r => r.Result.Error);
            Assert.True(DateTime.UtcNow < deadline && !failed.Any(),
                $"the slow requests did not all start: {string.Join("; ", failed)}\n{server.ErrorLog}");
            await Task.Delay(20);
        }
        return requests;
    }

    public static int Occurrences(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>As <see cref="GetPidAsync"/>, with what went wrong when no pid came back.</summary>
    public static async Task<(int? Pid, string? Error)> TryGetPidAsync(HttpClient client, int port, string target = "/pid")
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}{target}");
            request.Headers.ConnectionClose = true;
            using var response = await client.SendAsync(request);
            string body = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK)
            {
                return (null, $"status {(int)response.StatusCode}: {body}");
            }
            return (int.Parse(body, CultureInfo.InvariantCulture), null);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or FormatException
                                       // SocketsHttpHandler lets this one through unwrapped when the
                                       // connection is reset just as it connects (a stopping server).
                                       or SocketException
                                       // HttpIOException: the body cut short.
                                       or IOException)
        {
            return (null, $"{e.GetType().Name}: {e.Message}{(e.InnerException is { } inner ? $" ({inner.GetType().Name}: {inner.Message})" : "")}");
        }
    }

    /// <summary>The body of a whole HTTP/1.1 response as read off a socket.</summary>
    public static string BodyOf(string response) => response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];

    /// <summary>GET over a unix socket (Connection: close); the whole response as text.</summary>
    public static async Task<string> UnixGetAsync(string path, string target)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path));
        await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes($"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        using var stream = new NetworkStream(socket);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }

    public static HttpClient NewClient(TimeSpan? timeout = null) =>
        new(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero }) { Timeout = timeout ?? TimeSpan.FromSeconds(30) };
}

/// <summary>Clients requesting in a loop until stopped, counting answers per worker pid and failures.</summary>
internal sealed class LoadLoop : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task[] _clients;
    private readonly HttpClient _client = ProcessTools.NewClient();
    private int _failed;
    private int _ok;

    public ConcurrentDictionary<int, int> ByPid { get; } = new();
    public ConcurrentQueue<(DateTime At, int Pid)> Answers { get; } = new();
    /// <summary>When each failed request started, how long it took and what went wrong.</summary>
    public ConcurrentQueue<string> Failures { get; } = new();

    public LoadLoop(int port, int concurrency, string target = "/pid", int? totalRequests = null)
    {
        int remaining = totalRequests ?? int.MaxValue;
        _clients = new Task[concurrency];
        for (int i = 0; i < concurrency; i++)
        {
            _clients[i] = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested && Interlocked.Decrement(ref remaining) >= 0)
                {
                    var started = DateTime.UtcNow;
                    var (pid, error) = await ProcessTools.TryGetPidAsync(_client, port, target);
                    if (pid is int p)
                    {
                        Interlocked.Increment(ref _ok);
                        ByPid.AddOrUpdate(p, 1, (_, n) => n + 1);
                        Answers.Enqueue((DateTime.UtcNow, p));
                    }
                    else
                    {
                        Interlocked.Increment(ref _failed);
                        Failures.Enqueue($"{started:HH:mm:ss.fff} +{(DateTime.UtcNow - started).TotalMilliseconds:F0} ms: {error}");
                    }
                }
            });
        }
    }

    public int Ok => Volatile.Read(ref _ok);
    public int Failed => Volatile.Read(ref _failed);

    public async Task WaitForOkAsync(int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Ok < count)
        {
            Assert.True(DateTime.UtcNow < deadline, $"only {Ok} answers within {timeout.TotalSeconds} s ({Failed} failed)");
            await Task.Delay(25);
        }
    }

    /// <summary>Waits for every client to finish (when a total was given) or stops them.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_clients);
    }

    public Task CompletionAsync() => Task.WhenAll(_clients);

    public override string ToString() =>
        $"{Ok} ok, {Failed} failed; per pid: {string.Join(", ", ByPid.Select(kv => $"{kv.Key}={kv.Value}"))}" +
        string.Concat(Failures.Select(f => $"\n  failed at {f}"));

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _client.Dispose();
        _stop.Dispose();
    }
}

/// <summary>
/// Clients that keep their connection for the next request and never retry one, as wrk does and as a
/// proxy does with a POST: a request sent on a kept-alive connection that the server then closes without
/// answering is a failure. A response saying <c>Connection: close</c> makes the client connect anew.
/// </summary>
internal sealed class KeepAliveLoad : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task[] _clients;
    private int _failed;
    private int _ok;
    private int _connections;

    public ConcurrentDictionary<int, int> ByPid { get; } = new();
    public ConcurrentQueue<string> Failures { get; } = new();

    public KeepAliveLoad(int port, int concurrency, string target = "/pid")
    {
        byte[] request = System.Text.Encoding.ASCII.GetBytes($"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        _clients = new Task[concurrency];
        for (int i = 0; i < concurrency; i++)
        {
            _clients[i] = Task.Run(() => RunClientAsync(port, request));
        }
    }

    public int Ok => Volatile.Read(ref _ok);
    public int Failed => Volatile.Read(ref _failed);
    /// <summary>Connections made, the first of each client included.</summary>
    public int Connections => Volatile.Read(ref _connections);

    public async Task WaitForOkAsync(int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Ok < count)
        {
            Assert.True(DateTime.UtcNow < deadline, $"only {Ok} answers within {timeout.TotalSeconds} s: {this}");
            await Task.Delay(20);
        }
    }

    private async Task RunClientAsync(int port, byte[] request)
    {
        byte[] buffer = new byte[4096];
        Socket? socket = null;
        int served = 0;
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                if (socket is null)
                {
                    socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    await socket.ConnectAsync(IPAddress.Loopback, port);
                    Interlocked.Increment(ref _connections);
                    served = 0;
                }
                await socket.SendAsync(request, SocketFlags.None);
                var (status, close, body) = await ReadResponseAsync(socket, buffer);
                if (status != 200)
                {
                    throw new IOException($"status {status}");
                }
                int pid = int.Parse(body, CultureInfo.InvariantCulture);
                Interlocked.Increment(ref _ok);
                ByPid.AddOrUpdate(pid, 1, (_, n) => n + 1);
                served++;
                if (close)
                {
                    socket.Dispose();
                    socket = null;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or FormatException)
            {
                Interlocked.Increment(ref _failed);
                Failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} after {served} answers on the connection: {e.GetType().Name}: {e.Message}");
                socket?.Dispose();
                socket = null;
            }
        }
        socket?.Dispose();
    }

    /// <summary>One response with a Content-Length body: its status, whether it says Connection: close, and the body.</summary>
    private static async Task<(int Status, bool Close, string Body)> ReadResponseAsync(Socket socket, byte[] buffer)
    {
        int filled = 0;
        int headEnd;
        while ((headEnd = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
            if (n == 0)
            {
                throw new IOException(filled == 0 ? "closed without an answer" : "closed in the response head");
            }
            filled += n;
        }
        string head = System.Text.Encoding.ASCII.GetString(buffer, 0, headEnd);
        string[] lines = head.Split("\r\n");
        int status = int.Parse(lines[0].Split(' ')[1], CultureInfo.InvariantCulture);
        int length = 0;
        bool close = false;
        foreach (string line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            string name = line[..colon].Trim();
            string value = line[(colon + 1)..].Trim();
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                length = int.Parse(value, CultureInfo.InvariantCulture);
            }
            else if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
            {
                close = value.Equals("close", StringComparison.OrdinalIgnoreCase);
            }
        }
        int bodyStart = headEnd + 4;
        while (filled < bodyStart + length)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
            if (n == 0)
            {
                throw new IOException("closed in the response body");
            }
            filled += n;
        }
        if (filled != bodyStart + length)
        {
            throw new IOException("more bytes than the response's Content-Length");
        }
        return (status, close, System.Text.Encoding.ASCII.GetString(buffer, bodyStart, length));
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_clients);
    }

    public override string ToString() =>
        $"{Ok} ok, {Failed} failed over {Connections} connections; per pid: {string.Join(", ", ByPid.Select(kv => $"{kv.Key}={kv.Value}"))}" +
        string.Concat(Failures.Take(20).Select(f => $"\n  failed at {f}"));

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}
