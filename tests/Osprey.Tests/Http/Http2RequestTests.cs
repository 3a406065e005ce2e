using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Integration;

namespace Osprey.Tests.Http;

/// <summary>
/// The request limits over HTTP/2 (TLS), as the README promises them: each stream is held to them
/// as an HTTP/1.1 request is, with the same status codes, and a stream that breaks one is ended
/// alone while the connection's other streams go on. Requests HttpClient would not send (and the
/// frames of one connection) go through <see cref="RawHttp2Connection"/>.
/// </summary>
public sealed class Http2RequestTests : IDisposable
{
    private const string App = "h2_request_app:app";

    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-h2req-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private async Task<OspreyServer> StartAsync(params string[] args)
    {
        var (cert, key) = TlsTests.WriteSelfSigned(_dir, "CN=osprey-h2req");
        return await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = App,
            Args = ["--certfile", cert, "--keyfile", key, .. args],
        });
    }

    private static async Task<int> CallsAsync(OspreyServer server)
    {
        await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);
        RawHttp2Stream calls = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/calls"));
        Assert.Equal(200, calls.Status);
        return int.Parse(calls.Text, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Kestrel enforces MinRequestBodyDataRate per HTTP/2 connection: it used to drop the whole
    /// connection, with every stream on it and no 408. Only the slow stream is ended now.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_body_slower_than_the_minimum_rate_is_408_for_its_stream_and_the_other_streams_go_on(bool expectContinue)
    {
        await using var server = await StartAsync("--threads", "2");
        await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);
        (string, string)[] fields = expectContinue
            ? RawHttp2Connection.Request("POST", "/upload", ("content-length", "100000"), ("expect", "100-continue"))
            : RawHttp2Connection.Request("POST", "/upload", ("content-length", "100000"));
        int slow = await connection.SendHeadersAsync(fields, endStream: false);
        await connection.SendDataAsync(slow, "x"u8.ToArray(), endStream: false);
        // Eight pieces a second apart: still being sent when the slow stream is ended, after its 5 s grace.
        int streamed = await connection.SendHeadersAsync(RawHttp2Connection.Request("GET", "/stream?8"), endStream: true);
        RawHttp2Stream slowStream = connection.Stream(slow);
        RawHttp2Stream streamedStream = connection.Stream(streamed);

        // One byte a second, far below the default 240 bytes/s.
        while (!slowStream.Done && !connection.Closed && connection.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(1000);
            try
            {
                if (!slowStream.Done)
                {
                    await connection.SendDataAsync(slow, "x"u8.ToArray(), endStream: false);
                }
            }
            catch (IOException)
            {
                break;
            }
        }
        TimeSpan answeredAt = connection.Elapsed;
        Assert.False(connection.Closed, $"the connection was closed after {answeredAt}: slow stream {slowStream}, other stream {streamedStream}");
        Assert.True(slowStream.Status == 408, $"slow stream: {slowStream}");
        Assert.True(slowStream.Ended, $"slow stream: {slowStream}");
        Assert.True(answeredAt >= TimeSpan.FromSeconds(4), $"refused after only {answeredAt}");

        // The other stream goes on to its end, on the same connection, which also takes a new stream.
        Assert.True(await RawHttp2Connection.WaitAsync(() => streamedStream.Done || connection.Closed, TimeSpan.FromSeconds(20)), $"other stream: {streamedStream}");
        Assert.True(streamedStream.Ended && streamedStream.ResetCode is null, $"other stream: {streamedStream}, connection closed: {connection.Closed}");
        Assert.Equal(string.Concat(Enumerable.Range(0, 8).Select(i => $"piece {i}\n")), streamedStream.Text);
        Assert.Contains(streamedStream.DataTimes, at => at > answeredAt);
        RawHttp2Stream after = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/calls"));
        Assert.Equal(200, after.Status);
        Assert.Null(connection.GoAwayCode);

        Assert.Matches(@"\[WARNING\] .*POST /upload: the request body came slower than 240 bytes/s; 408, HTTP/2 stream ended", server.ErrorLog);
        // A buffered body never reached the application; a streamed one (100-continue) did.
        Assert.Equal(expectContinue ? "2" : "1", after.Text);
    }

    /// <summary>
    /// A streamed body (100-continue) read only after the response has started: too late for a 408,
    /// so the slow stream is reset, and again only that stream.
    /// </summary>
    [Fact]
    public async Task A_slow_body_after_the_response_started_resets_only_its_stream()
    {
        await using var server = await StartAsync("--threads", "2");
        await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);
        int slow = await connection.SendHeadersAsync(
            RawHttp2Connection.Request("POST", "/late-upload", ("content-length", "100000"), ("expect", "100-continue")), endStream: false);
        RawHttp2Stream slowStream = connection.Stream(slow);
        while (!slowStream.Done && !connection.Closed && connection.Elapsed < TimeSpan.FromSeconds(15))
        {
            try
            {
                await connection.SendDataAsync(slow, "x"u8.ToArray(), endStream: false);
            }
            catch (IOException)
            {
                break;
            }
            await Task.Delay(1000);
        }
        Assert.False(connection.Closed, $"the connection was closed after {connection.Elapsed}: {slowStream}");
        Assert.True(slowStream.Status == 200 && slowStream.ResetCode is not null && !slowStream.Ended, $"slow stream: {slowStream}");
        Assert.Equal("started\n", slowStream.Text);
        Assert.True(connection.Elapsed >= TimeSpan.FromSeconds(4), $"reset after only {connection.Elapsed}");

        RawHttp2Stream next = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/calls"));
        Assert.Equal(200, next.Status);
        Assert.Equal("1", next.Text);
        Assert.Null(connection.GoAwayCode);
        Assert.Matches(@"\[WARNING\] .*POST /late-upload: the request body came slower than 240 bytes/s; HTTP/2 stream reset", server.ErrorLog);
    }

    /// <summary>RFC 9113 §8.2.2: these fields make an HTTP/2 request malformed; the application never sees one.</summary>
    [Fact]
    public async Task Connection_specific_header_fields_are_refused_before_the_application()
    {
        await using var server = await StartAsync();
        (string, string)[] refused =
        [
            ("transfer-encoding", "chunked"), ("transfer-encoding", "gzip"), ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"), ("proxy-connection", "keep-alive"), ("connection", "keep-alive"),
        ];
        byte[] smuggled = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray();
        foreach ((string name, string value) in refused)
        {
            await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);
            RawHttp2Stream stream = await connection.ExchangeAsync(RawHttp2Connection.Request("POST", "/upload", (name, value)), smuggled);
            // A 400, or a stream or connection error (Kestrel's own for "connection"): anything but an answer from the application.
            Assert.True(stream.Status == 400 || stream.ResetCode is not null || connection.GoAwayCode is not null,
                $"{name}: {value}: {stream}");
            Assert.NotEqual(200, stream.Status);
        }
        Assert.Equal(0, await CallsAsync(server));

        // TE: trailers is the one connection-related field HTTP/2 allows.
        await using (var connection = await RawHttp2Connection.ConnectAsync(server.Port))
        {
            RawHttp2Stream stream = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/env", ("te", "trailers")));
            Assert.Equal(200, stream.Status);
            Assert.Equal("trailers", JsonDocument.Parse(stream.Data).RootElement.GetProperty("HTTP_TE").GetString());
        }
        Assert.Equal(1, await CallsAsync(server));
    }

    /// <summary>
    /// --limit-request-fields counts header fields as HTTP/1.1 does, Host included (:authority is
    /// the Host of HTTP/2); Kestrel counts the pseudo-header fields too, which made the limit N-3.
    /// </summary>
    [Fact]
    public async Task The_header_field_limit_counts_fields_as_http_1_1_does()
    {
        await using var server = await StartAsync("--limit-request-fields", "5");
        (string, string)[] four = [("x-a0", "v"), ("x-a1", "v"), ("x-a2", "v"), ("x-a3", "v")];
        await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);

        // :authority and four fields: five, as Host and four fields are in HTTP/1.1.
        RawHttp2Stream fits = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/env", four));
        Assert.True(fits.Status == 200, $":authority + 4: {fits}");
        Assert.Equal("v", JsonDocument.Parse(fits.Data).RootElement.GetProperty("HTTP_X_A3").GetString());
        // A Host field instead of :authority, or beside it (Kestrel keeps one Host): five too.
        (string, string)[] hostOnly = [(":method", "GET"), (":path", "/env"), (":scheme", "https"), ("host", "127.0.0.1"), .. four];
        RawHttp2Stream host = await connection.ExchangeAsync(hostOnly);
        Assert.True(host.Status == 200, $"host + 4: {host}");
        RawHttp2Stream both = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/env", [("host", "127.0.0.1"), .. four]));
        Assert.True(both.Status == 200, $":authority + host + 4: {both}");

        // Six is one too many: 431, and only the stream ends.
        RawHttp2Stream over = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/env", [.. four, ("x-a4", "v")]));
        Assert.True(over.Status == 431, $":authority + 5: {over}");
        RawHttp2Stream next = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/calls"));
        Assert.Equal(200, next.Status);
        Assert.Equal("3", next.Text);
    }

    /// <summary>
    /// --limit-request-line applies to an HTTP/2 request as to the HTTP/1.1 request line it would be
    /// (method, target, version): 414 beyond it, as HTTP/1.1 on the same listener answers, where
    /// Kestrel's own check (on method, scheme, authority and path) reset the stream.
    /// </summary>
    [Fact]
    public async Task A_request_line_over_the_limit_is_414_over_http2_as_over_http_1_1()
    {
        await using var server = await StartAsync("--limit-request-line", "100");
        string fits = "/" + new string('a', 100 - "GET / HTTP/1.1".Length);
        string over = "/" + new string('a', 150);
        await using var connection = await RawHttp2Connection.ConnectAsync(server.Port);

        RawHttp2Stream atLimit = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", fits));
        Assert.True(atLimit.Status == 200, $"at the limit: {atLimit}");
        RawHttp2Stream beyond = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", over));
        Assert.True(beyond.Status == 414, $"beyond the limit: {beyond}");
        RawHttp2Stream oneMore = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", fits + "a"));
        Assert.True(oneMore.Status == 414, $"one byte beyond the limit: {oneMore}");
        RawHttp2Stream next = await connection.ExchangeAsync(RawHttp2Connection.Request("GET", "/calls"));
        Assert.Equal(200, next.Status);
        Assert.Equal("1", next.Text);

        // HTTP/1.1 over the same TLS listener: the same line, the same answers, and the connection closed after a 414.
        using var http11 = new HttpClient(new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        })
        {
            DefaultRequestVersion = HttpVersion.Version11,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(10),
        };
        var origin = new Uri($"https://127.0.0.1:{server.Port}");
        using (var response = await http11.GetAsync(new Uri(origin, fits)))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        using (var response = await http11.GetAsync(new Uri(origin, over)))
        {
            Assert.Equal(HttpStatusCode.RequestUriTooLong, response.StatusCode);
            Assert.True(response.Headers.ConnectionClose);
        }
    }
}
