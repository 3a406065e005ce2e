using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;
using Xunit.Abstractions;
using static Osprey.Tests.Hostile.HostileSupport;

namespace Osprey.Tests.Hostile;

/// <summary>
/// Slow clients cost a connection, never the server: with 500 connections trickling a head one
/// byte a second and 500 idle keep-alive connections, one worker with one Python thread and the
/// default settings still answers a fresh client within a second. Also: a client that never reads
/// a large response does not hold the Python thread.
/// </summary>
public sealed class SlowClientTests(ITestOutputHelper output)
{
    private const int SlowCount = 500;
    private const int IdleCount = 500;

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Fresh_client_is_answered_within_a_second_beside_500_slow_and_500_idle_connections(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, App);
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.Port);
        var sockets = new List<Socket>();
        using var stop = new CancellationTokenSource();
        try
        {
            byte[] head = Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: h\r\nX-Slow: ");
            var slow = new List<Socket>();
            for (int i = 0; i < SlowCount; i++)
            {
                Socket socket = await ConnectAsync(endpoint);
                sockets.Add(socket);
                slow.Add(socket);
                socket.Send(head.AsSpan(0, 1));
            }
            // One header byte per connection per second, for as long as the test runs.
            Task trickle = Task.Run(async () =>
            {
                int position = 1;
                while (!stop.IsCancellationRequested)
                {
                    await Task.Delay(1000);
                    byte next = position < head.Length ? head[position] : (byte)'a';
                    position++;
                    foreach (Socket socket in slow)
                    {
                        try
                        {
                            socket.Send([next]);
                        }
                        catch (SocketException)
                        {
                            // The server may cut a connection off; that is its right.
                        }
                    }
                }
            });

            // Idle keep-alive connections: each has been served once and stays open.
            byte[] request = RawHttp.Get("/idle", server.Port);
            var idle = new Socket[IdleCount];
            await Parallel.ForEachAsync(Enumerable.Range(0, IdleCount), new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (i, _) =>
            {
                Socket socket = await ConnectAsync(endpoint);
                idle[i] = socket;
                await socket.SendAsync(request);
                await ReadResponseHeadAsync(socket);
            });
            sockets.AddRange(idle);

            var latencies = new List<double>();
            for (int i = 0; i < 5; i++)
            {
                var clock = Stopwatch.StartNew();
                RawHttpResponse response = await RawHttp.GetAsync(server, "/fresh");
                latencies.Add(clock.Elapsed.TotalMilliseconds);
                Assert.Equal("ok GET /fresh", response.BodyText);
            }
            latencies.Sort();
            output.WriteLine($"{engine}: fresh-client latency with {SlowCount} slow + {IdleCount} idle connections: " +
                $"median {latencies[2]:F1} ms, max {latencies[^1]:F1} ms");
            // The median, so that one scheduling hiccup of a loaded test machine is not a failure.
            Assert.True(latencies[2] < 1000, $"median fresh-client latency {latencies[2]:F0} ms");
            stop.Cancel();
            await trickle;
            Assert.False(server.HasExited);
        }
        finally
        {
            stop.Cancel();
            foreach (Socket socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    /// <summary>
    /// A client that never reads a 64 MB response: the Python thread (there is one) is free for the
    /// next request once the response is produced, not held until the client reads, and memory
    /// stays bounded (the engines buffer at most about 1 MB per connection beyond what the
    /// application itself holds).
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Client_that_never_reads_a_large_response_does_not_hold_the_python_thread_for_long(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, App);
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.Port);
        using Socket reader = await ConnectAsync(endpoint);
        reader.ReceiveBufferSize = 4096;
        string id = Guid.NewGuid().ToString("N");
        await reader.SendAsync(RawHttp.Get($"/big?size={64 << 20}&id={id}", server.Port));
        await Task.Delay(500);
        // The response's iterable is waiting for the client (bounded buffers: backpressure); the
        // next request is answered once the engine gives up on a client that reads nothing.
        var clock = Stopwatch.StartNew();
        RawHttpResponse response = await RawHttp.SendAsync(server.Port, RawHttp.Get("/next", server.Port), timeout: TimeSpan.FromSeconds(60));
        output.WriteLine($"{engine}: next request answered after {clock.Elapsed.TotalSeconds:F1} s while a client read nothing");
        Assert.Equal("ok GET /next", response.BodyText);
        // Both engines drop a reader slower than 240 bytes/s after a 5 s grace; slack for a loaded machine.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(25), $"the Python thread was held for {clock.Elapsed}");
        // The abandoned response's iterable was closed.
        Assert.True(await Integration.TestSupport.EventuallyAsync(async () =>
        {
            var state = (await RawHttp.GetAsync(server, $"/closed?id={id}")).Json();
            return state.TryGetProperty("closed", out var closed) && closed.GetBoolean();
        }, TimeSpan.FromSeconds(10)), "close() was not called on the abandoned response");
    }

    /// <summary>
    /// A client that reads steadily, if slowly (400 KB/s), gets a response of several MB whole. On
    /// Kestrel, bytes written with GetSpan/Advance were not counted against MinResponseDataRate, so a flush
    /// waiting more than its 5 s grace on a full 1 MB pipe cut the connection after about 1 MB.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Client_reading_slowly_but_steadily_gets_a_large_response_whole(string engine)
    {
        const int Size = 8 << 20;
        const int BytesPerSecond = 400_000;
        await using var server = await OspreyServer.StartAsync(engine, App);
        using Socket reader = await ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port));
        reader.ReceiveBufferSize = 16384;
        // One item of it all: one write, then flushes that wait for the client the longest.
        await reader.SendAsync(RawHttp.Get($"/big?size={Size}&one=1&id={Guid.NewGuid():N}", server.Port));
        var buffer = new byte[8192];
        long received = 0;
        var clock = Stopwatch.StartNew();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        while (true)
        {
            int n;
            try
            {
                n = await reader.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            }
            catch (SocketException e)
            {
                Assert.Fail($"{engine}: the connection was cut ({e.SocketErrorCode}) after {received} bytes, {clock.Elapsed.TotalSeconds:F1} s");
                return;
            }
            if (n == 0)
            {
                break;
            }
            received += n;
            if (received >= Size + 100)
            {
                // The head and the whole body are in (the head is under 200 bytes).
                break;
            }
            TimeSpan due = TimeSpan.FromSeconds((double)received / BytesPerSecond);
            if (due > clock.Elapsed)
            {
                await Task.Delay(due - clock.Elapsed);
            }
        }
        output.WriteLine($"{engine}: {received} bytes in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(received > Size, $"{engine}: only {received} bytes of a {Size}-byte body, after {clock.Elapsed.TotalSeconds:F1} s:\n{server.ErrorLog}");
    }

    private static async Task<Socket> ConnectAsync(IPEndPoint endpoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endpoint);
        return socket;
    }

    private static async Task ReadResponseHeadAsync(Socket socket)
    {
        var buffer = new byte[4096];
        var received = new StringBuilder();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!received.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            Assert.True(n > 0, "the server closed an idle connection before answering it");
            received.Append(Encoding.Latin1.GetString(buffer, 0, n));
        }
    }
}
