using System.Diagnostics;
using System.Globalization;
using System.Text;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Hostile.HostileSupport;

namespace Osprey.Tests.Hostile;

/// <summary>--limit-request-*, --keep-alive, --header-timeout, --min-request-body-rate, --max-connections, --backlog, on both engines.</summary>
public sealed class LimitTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private static readonly string[] s_limits =
    [
        "--limit-request-line", "100", "--limit-request-fields", "5", "--limit-request-field_size", "100",
        "--limit-request-body", "1000",
    ];

    private Task<OspreyServer> LimitedAsync(string engine) => pool.GetAsync(engine, App, s_limits);

    private static async Task AssertRefusedAsync(OspreyServer server, string request, int status)
    {
        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(server.Port, request);
        using (connection)
        {
            Assert.True(response?.StatusCode == status, $"expected {status}, got {response?.ToString() ?? "no answer"}");
            await AssertClosedAsync(connection, $"after {status}");
        }
        await AssertServesAsync(server);
    }

    /// <summary>0 means no limit, as in gunicorn: only the 1 MB bound on a whole head applies (Kestrel's own defaults, 8 KB lines and 100 fields, do not).</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Zero_line_and_field_limits_are_no_limit(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--limit-request-line", "0", "--limit-request-fields", "0");
        var request = new StringBuilder($"GET /alive?{new string('q', 20_000)} HTTP/1.1\r\nHost: h\r\n");
        for (int i = 0; i < 300; i++)
        {
            request.Append(CultureInfo.InvariantCulture, $"X-Field-{i}: {i}\r\n");
        }
        request.Append("\r\n");
        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(server.Port, request.ToString());
        using (connection)
        {
            Assert.True(response?.StatusCode == 200, $"a 20 KB request line and 301 fields: {response?.ToString() ?? "no answer"}");
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Request_line_over_the_limit_is_414(string engine)
    {
        OspreyServer server = await LimitedAsync(engine);
        // At the limit is fine, beyond it is not.
        string fits = "/" + new string('a', 100 - "GET / HTTP/1.1".Length);
        Assert.Equal(200, (await RawHttp.GetAsync(server, fits)).StatusCode);
        await AssertRefusedAsync(server, $"GET /{new string('a', 150)} HTTP/1.1\r\nHost: h\r\n\r\n", 414);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Too_many_header_fields_is_431(string engine)
    {
        OspreyServer server = await LimitedAsync(engine);
        Assert.Equal(200, (await RawHttp.GetAsync(server, "/", "A: 1", "B: 2", "C: 3", "D: 4")).StatusCode);
        await AssertRefusedAsync(server, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n", 431);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_field_over_the_size_limit_is_431(string engine)
    {
        OspreyServer server = await LimitedAsync(engine);
        Assert.Equal(200, (await RawHttp.GetAsync(server, "/", "X-Long: " + new string('v', 80))).StatusCode);
        await AssertRefusedAsync(server, $"GET / HTTP/1.1\r\nHost: h\r\nX-Long: {new string('v', 200)}\r\n\r\n", 431);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Body_over_the_limit_by_content_length_is_413_before_it_is_sent(string engine)
    {
        OspreyServer server = await LimitedAsync(engine);
        // Only the head goes out: the answer must not wait for a body the server will never take.
        await AssertRefusedAsync(server, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n", 413);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Chunked_body_is_limited_by_its_decoded_size(string engine)
    {
        OspreyServer server = await LimitedAsync(engine);
        // 900 decoded bytes in 1-byte chunks: about 5 KB on the wire, under the limit all the same.
        string[] small = [.. Enumerable.Repeat("z", 900)];
        var ok = await RawHttp.SendAsync(server.Port,
            RawHttp.Request("POST", "/echo", server.Port, ["Transfer-Encoding: chunked"], RawHttp.Chunked(small)));
        Assert.True(ok.StatusCode == 200, ok.ToString());
        Assert.Equal(900, ok.Json().GetProperty("length").GetInt32());

        string[] large = [.. Enumerable.Repeat(new string('z', 100), 11)];
        await AssertRefusedAsync(server,
            Encoding.Latin1.GetString(RawHttp.Request("POST", "/echo", server.Port, ["Transfer-Encoding: chunked"], RawHttp.Chunked(large))), 413);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Idle_keep_alive_connection_is_closed_after_keep_alive_seconds(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--keep-alive", "1");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/", server.Port));
        Assert.Equal(200, (await connection.ReadResponseAsync()).StatusCode);
        var clock = Stopwatch.StartNew();
        await AssertClosedAsync(connection, "idle keep-alive");
        // Generous: the check runs about once a second and the machine may be loaded.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"closed after {clock.Elapsed}");
    }

    /// <summary>--keep-alive 0: every response says it closes, and the server closes at once.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Keep_alive_zero_closes_after_each_response_and_says_so(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--keep-alive", "0");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/", server.Port));
        RawHttpResponse response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.StatusCode);
        Assert.Equal("close", response.Header("Connection"));
        var clock = Stopwatch.StartNew();
        await AssertClosedAsync(connection, "--keep-alive 0");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"closed after {clock.Elapsed}, not at once");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_keep_alive_connection_idle_for_seconds_serves_its_next_requests_whole(string engine)
    {
        // The lean engine gives an idle connection's input buffer back after a second; the next
        // requests on it (one larger than that buffer) must not notice.
        OspreyServer server = await pool.GetAsync(engine, App, "--keep-alive", "30");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/", server.Port));
        Assert.Equal(200, (await connection.ReadResponseAsync()).StatusCode);
        await Task.Delay(TimeSpan.FromSeconds(2.5));

        byte[] body = Encoding.ASCII.GetBytes(new string('q', 40_000));
        await connection.SendAsync(RawHttp.Request("POST", "/echo", server.Port, body: body));
        var echoed = await connection.ReadResponseAsync();
        Assert.True(echoed.StatusCode == 200, echoed.ToString());
        Assert.Equal(body.Length, echoed.Json().GetProperty("length").GetInt32());
        await connection.SendAsync(RawHttp.Get("/", server.Port));
        Assert.Equal(200, (await connection.ReadResponseAsync()).StatusCode);
    }

    public static TheoryData<string, string> BlankLineCuts => Engines.Cross(["1", "2", "3"]);

    /// <summary>
    /// A head that arrives in pieces is served wherever the cut falls in its final CRLF CRLF, and a bare LF
    /// blank line cut the same way is still refused: the lean engine searches each piece once, resuming
    /// where a terminator could have begun, rather than the whole head again at every piece.
    /// </summary>
    [Theory, MemberData(nameof(BlankLineCuts))]
    public async Task A_head_in_pieces_is_read_wherever_its_blank_line_is_cut(string engine, string cut)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        var lines = new StringBuilder("GET /pieces HTTP/1.1\r\nHost: h");
        for (int i = 0; i < 20; i++)
        {
            lines.Append(CultureInfo.InvariantCulture, $"\r\nX-Piece-{i}: {new string('v', 60)}");
        }
        string head = lines.ToString();
        int at = int.Parse(cut, CultureInfo.InvariantCulture);

        foreach ((string terminator, int status) in new[] { ("\r\n\r\n", 200), ("\n\n", 400) })
        {
            using var connection = await RawHttpConnection.OpenAsync(server.Port);
            for (int start = 0; start < head.Length; start += 300)
            {
                await connection.SendAsync(head.Substring(start, Math.Min(300, head.Length - start)));
                await Task.Delay(20);
            }
            string end = terminator[..Math.Min(at, terminator.Length)];
            await connection.SendAsync(end);
            if (end.Length < terminator.Length)
            {
                await Task.Delay(50);
                await connection.SendAsync(terminator[end.Length..]);
            }
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.True(response.StatusCode == status, $"{terminator.Replace("\r", "CR", StringComparison.Ordinal).Replace("\n", "LF", StringComparison.Ordinal)} cut after {at}: {response}");
            if (status == 200)
            {
                Assert.Equal("ok GET /pieces", response.BodyText);
            }
        }
        await AssertServesAsync(server);
    }

    /// <summary>A slow-loris client that keeps sending one byte at a time is cut off by the header timeout, measured from its first byte.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Head_trickled_byte_by_byte_is_cut_off_by_the_header_timeout(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--header-timeout", "2");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        var clock = Stopwatch.StartNew();
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: h\r\n");
        bool cut = false;
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                await connection.SendAsync("X");
            }
            catch (IOException)
            {
                cut = true;
                break;
            }
            byte[] answer = await connection.ReadForAsync(TimeSpan.FromMilliseconds(250));
            if (answer.Length > 0 || connection.ServerClosed)
            {
                string text = Encoding.Latin1.GetString(answer);
                Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), text);
                cut = true;
                break;
            }
        }
        Assert.True(cut, "a head trickled for 30 s was never cut off");
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(1.5), $"cut off after only {clock.Elapsed}");
        await AssertServesAsync(server);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Body_slower_than_the_minimum_rate_is_cut_off(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--min-request-body-rate", "1000");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n");
        var clock = Stopwatch.StartNew();
        bool cut = false;
        while (clock.Elapsed < TimeSpan.FromSeconds(40))
        {
            try
            {
                await connection.SendAsync("0123456789");
            }
            catch (IOException)
            {
                cut = true;
                break;
            }
            byte[] answer = await connection.ReadForAsync(TimeSpan.FromMilliseconds(500));
            if (answer.Length > 0 || connection.ServerClosed)
            {
                string text = Encoding.Latin1.GetString(answer);
                Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), text);
                cut = true;
                break;
            }
        }
        Assert.True(cut, "a body arriving at 20 bytes/s was never cut off");
        // The rate is only enforced after its 5 s grace period.
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(4), $"cut off after only {clock.Elapsed}");
        await AssertServesAsync(server);
    }

    /// <summary>
    /// An Expect: 100-continue body is read by the application as it arrives, so it holds the
    /// (only) Python thread: the minimum rate frees it, and the next client is served.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Streamed_body_slower_than_the_minimum_rate_frees_the_python_thread(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--min-request-body-rate", "1000");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync("POST /upload?id=slow HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n");
        Assert.Equal(100, (await connection.ReadResponseAsync()).StatusCode);
        var clock = Stopwatch.StartNew();
        using var trickling = new CancellationTokenSource();
        Task trickle = Task.Run(async () =>
        {
            while (!trickling.IsCancellationRequested)
            {
                try
                {
                    await connection.SendAsync("0123456789");
                    await Task.Delay(500);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
                {
                    return;
                }
            }
        });
        // One Python thread: this answer comes only once the trickling upload lets go of it.
        RawHttpResponse next = await RawHttp.SendAsync(server.Port, RawHttp.Get("/next", server.Port), timeout: TimeSpan.FromSeconds(60));
        trickling.Cancel();
        await trickle;
        Assert.Equal("ok GET /next", next.BodyText);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"the Python thread was held for {clock.Elapsed}");
    }

    /// <summary>Beyond --max-connections a client waits in the backlog and is served once a slot frees.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Connections_beyond_the_limit_wait_until_one_closes(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, App, "--max-connections", "2");
        // Let the readiness probes' connections be closed, so both slots are free.
        await Task.Delay(500);
        using var first = await RawHttpConnection.OpenAsync(server.Port);
        await first.SendAsync(RawHttp.Get("/one", server.Port));
        Assert.Equal("ok GET /one", (await first.ReadResponseAsync()).BodyText);
        using var second = await RawHttpConnection.OpenAsync(server.Port);
        await second.SendAsync(RawHttp.Get("/two", server.Port));
        Assert.Equal("ok GET /two", (await second.ReadResponseAsync()).BodyText);

        using var third = await RawHttpConnection.OpenAsync(server.Port);
        await third.SendAsync(RawHttp.Get("/three", server.Port));
        byte[] early = await third.ReadForAsync(TimeSpan.FromSeconds(1));
        Assert.True(early.Length == 0 && !third.ServerClosed, $"the third connection was not held back: '{Encoding.Latin1.GetString(early)}'");

        first.Dispose();
        RawHttpResponse late = await third.ReadResponseAsync(timeout: TimeSpan.FromSeconds(15));
        Assert.Equal("ok GET /three", late.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Backlog_reaches_listen(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--backlog", "37");
        var psi = new ProcessStartInfo("ss", ["-ltnH", $"sport = :{server.Port}"]) { RedirectStandardOutput = true };
        using Process ss = Process.Start(psi)!;
        string output = await ss.StandardOutput.ReadToEndAsync();
        await ss.WaitForExitAsync();
        // For a listening socket, ss shows the backlog as Send-Q: "LISTEN 0 37 127.0.0.1:PORT ...".
        string[] fields = output.Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
        Assert.True(fields.Length >= 3 && fields[0] == "LISTEN", $"ss: '{output}'");
        Assert.Equal("37", fields[2]);
    }
}
