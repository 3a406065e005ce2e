using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;
using Xunit.Abstractions;
using static Osprey.Tests.Hostile.HostileSupport;

namespace Osprey.Tests.Hostile;

/// <summary>
/// Bounded fuzzing: seeded random mutations of valid requests, a fixed number of them, against
/// each engine. Every answer must be a well-formed HTTP/1.1 status line (or none); afterwards the
/// server is alive, answers correctly, and its memory has not run away.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    private const int Iterations = 3000;
    private const int Seed = 20261130;

    private static readonly string[] s_templates =
    [
        "GET /fuzz?a=1&b=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "HEAD /x HTTP/1.1\r\nHost: h\r\nCookie: a=b; c=d\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST /upload?id=fuzz HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    ];

    private static readonly byte[] s_interesting = Encoding.Latin1.GetBytes("\r\n\0 \t:;,-+0123456789abcdefABCDEF/?%\x7f\xff\x0b");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Server_survives_mutated_requests_and_keeps_its_memory_bounded(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, App, "--threads", "2");
        // Warm up first, so the baseline includes what a served request costs once.
        for (int i = 0; i < 200; i++)
        {
            await AssertServesAsync(server);
        }
        long rssBefore = ResidentKilobytes(server.ProcessId);

        var random = new Random(Seed);
        byte[][] requests = [.. Enumerable.Range(0, Iterations).Select(_ => Mutate(random))];
        int answered = 0;
        await Parallel.ForEachAsync(requests, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (request, _) =>
        {
            string answer = await ExchangeOnceAsync(server.Port, request);
            if (answer.Length > 0)
            {
                Interlocked.Increment(ref answered);
                Assert.True(answer.StartsWith("HTTP/1.1 ", StringComparison.Ordinal),
                    $"not a status line in answer to {Escape(request)}: {Escape(Encoding.Latin1.GetBytes(answer))}");
            }
        });

        Assert.False(server.HasExited, "the server died during fuzzing:\n" + server.ErrorLog);
        for (int i = 0; i < 20; i++)
        {
            await AssertServesAsync(server);
        }
        var echo = await RawHttp.SendAsync(server.Port, RawHttp.Request("POST", "/echo", server.Port, body: "after fuzzing"u8.ToArray()));
        Assert.Equal("after fuzzing", echo.Json().GetProperty("body").GetString());

        long rssAfter = ResidentKilobytes(server.ProcessId);
        output.WriteLine($"{engine}: {Iterations} mutated requests (seed {Seed}), {answered} answered; RSS {rssBefore / 1024} MB before, {rssAfter / 1024} MB after");
        // Generous: the GC and allocator may keep what they grew; unbounded growth would show as far more.
        Assert.True(rssAfter < rssBefore + 150 * 1024, $"RSS grew from {rssBefore} kB to {rssAfter} kB");
        Integration.TestSupport.AssertNoDotNetStackTrace(server.ErrorLog);
    }

    private static byte[] Mutate(Random random)
    {
        var bytes = new List<byte>(Encoding.Latin1.GetBytes(s_templates[random.Next(s_templates.Length)]));
        int mutations = 1 + random.Next(4);
        for (int m = 0; m < mutations && bytes.Count > 0; m++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(6))
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes.Insert(at, s_interesting[random.Next(s_interesting.Length)]);
                    break;
                case 2:
                    bytes.RemoveRange(at, Math.Min(bytes.Count - at, 1 + random.Next(8)));
                    break;
                case 3:
                    bytes[at] = s_interesting[random.Next(s_interesting.Length)];
                    break;
                case 4:
                    // Repeat a stretch: long lines, duplicated headers, runaway digits.
                    int length = Math.Min(bytes.Count - at, 1 + random.Next(40));
                    var stretch = bytes.GetRange(at, length);
                    int times = 1 + random.Next(random.Next(2) == 0 ? 3 : 300);
                    for (int t = 0; t < times; t++)
                    {
                        bytes.InsertRange(at, stretch);
                    }
                    break;
                default:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
            }
        }
        return [.. bytes];
    }

    /// <summary>Sends, half-closes, and returns whatever the server answers before it closes (bounded in time).</summary>
    private static async Task<string> ExchangeOnceAsync(int port, byte[] request)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        var received = new MemoryStream();
        try
        {
            await socket.SendAsync(request);
            socket.Shutdown(SocketShutdown.Send);
            var buffer = new byte[16384];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    break;
                }
                received.Write(buffer, 0, n);
            }
        }
        catch (SocketException)
        {
            // A reset after a refusal is an acceptable end.
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the server neither answered nor closed within 30 s: {Escape(request)}");
        }
        return Encoding.Latin1.GetString(received.ToArray());
    }

    private static long ResidentKilobytes(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        throw new InvalidOperationException("no VmRSS");
    }

    private static string Escape(byte[] bytes)
    {
        string text = Encoding.Latin1.GetString(bytes, 0, Math.Min(bytes.Length, 300));
        var sb = new StringBuilder();
        foreach (char c in text)
        {
            sb.Append(c is >= ' ' and < (char)0x7f ? c.ToString() : $"\\x{(int)c:x2}");
        }
        return sb.ToString();
    }
}
