using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Integration;
using static Osprey.Tests.Hostile.HostileSupport;

namespace Osprey.Tests.Http;

/// <summary>
/// A client that sends a complete request and then closes its sending side (shutdown(SHUT_WR), as
/// <c>printf ... | nc -N</c>, health checkers and some HTTP/1.0 clients do) can still receive
/// (RFC 9112 §9.6), so it gets its whole response, whether the FIN comes with the request or while
/// the application runs; over TLS too. A client that is really gone (a reset, or a FIN before the
/// request was complete) still stops the work.
/// </summary>
public sealed class KestrelHalfCloseTests(ServerPool pool) : IClassFixture<ServerPool>, IDisposable
{
    private const string SlowApp = "timeout_app:app";
    private const int Attempts = 5;

    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-halfclose-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Name → (request, the responses' bodies in order). MARK is replaced by a fresh marker.</summary>
    private static readonly Dictionary<string, (string Request, string[] Bodies)> s_cases = new()
    {
        ["get"] = ("GET /alive?MARK HTTP/1.1\r\nHost: h\r\n\r\n", ["ok GET /alive"]),
        ["get_connection_close"] = ("GET /alive?MARK HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", ["ok GET /alive"]),
        ["http_1_0"] = ("GET /alive?MARK HTTP/1.0\r\n\r\n", ["ok GET /alive"]),
        ["post_with_body"] = ("POST /echo?MARK HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", ["\"body\": \"hello\""]),
        ["chunked_post"] = ("POST /echo?MARK HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", ["\"body\": \"hello\""]),
        ["two_pipelined"] = ("GET /one?MARK HTTP/1.1\r\nHost: h\r\n\r\nGET /two?MARK HTTP/1.1\r\nHost: h\r\n\r\n", ["ok GET /one", "ok GET /two"]),
    };

    public static TheoryData<string, string> Cases => Engines.Cross(s_cases.Keys);

    [Theory, MemberData(nameof(Cases))]
    public async Task Complete_request_followed_by_a_half_close_is_answered(string engine, string name)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        var (request, bodies) = s_cases[name];
        for (int attempt = 0; attempt < Attempts; attempt++)
        {
            string marker = Guid.NewGuid().ToString("N");
            using var connection = await RawHttpConnection.OpenAsync(server.Port);
            await connection.SendAsync(request.Replace("MARK", marker, StringComparison.Ordinal));
            connection.ShutdownSend();
            foreach (string body in bodies)
            {
                RawHttpResponse response = await ReadAsync(connection, $"{name}, attempt {attempt + 1}");
                Assert.True(response.StatusCode == 200 && response.Complete, $"{name}, attempt {attempt + 1}:\n{response}");
                Assert.Contains(body, response.BodyText, StringComparison.Ordinal);
            }
            await AssertClosedAsync(connection, name);
        }
        await AssertServesAsync(server);
    }

    /// <summary>The FIN arrives while the application sleeps: the response still arrives, in full.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Half_close_while_the_application_runs_still_gets_the_response(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, SlowApp);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/sleep?s=1", server.Port));
        await Task.Delay(300);
        connection.ShutdownSend();
        RawHttpResponse response = await ReadAsync(connection, "slow request");
        Assert.True(response.StatusCode == 200 && response.Complete, response.ToString());
        Assert.Equal("LATE-OUTPUT", response.BodyText);
        await AssertClosedAsync(connection, "slow request");
    }

    /// <summary>The FIN arrives between two pieces of a streamed response: the rest still follows.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Half_close_during_a_streamed_response_gets_the_rest_of_it(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, SlowApp);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/stream_hang?s=1", server.Port));
        await connection.WaitForBytesAsync("first chunk;", TimeSpan.FromSeconds(10));
        connection.ShutdownSend();
        RawHttpResponse response = await ReadAsync(connection, "streamed response");
        Assert.True(response.StatusCode == 200 && response.Complete, response.ToString());
        Assert.Equal("first chunk;LATE-OUTPUT", response.BodyText);
    }

    /// <summary>The client closed before its body was complete: the application never sees the request.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Half_close_before_the_body_is_complete_does_not_reach_the_application(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string marker = Guid.NewGuid().ToString("N");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync($"POST /echo?{marker} HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
        connection.ShutdownSend();
        byte[] rest = await connection.ReadToCloseAsync(TimeSpan.FromSeconds(20));
        Assert.DoesNotContain("200 OK", Encoding.Latin1.GetString(rest), StringComparison.Ordinal);
        Assert.Empty(await SeenAsync(server, marker));
        await AssertServesAsync(server);
    }

    /// <summary>
    /// A half-closed client that then resets mid-download is gone: the application's iterable is
    /// closed long before its end, as for a client that resets without half-closing first.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Reset_after_a_half_close_still_stops_the_response(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string id = Guid.NewGuid().ToString("N");
        var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get($"/big?size={32 << 20}&id={id}", server.Port));
        connection.ShutdownSend();
        await connection.WaitForBytesAsync("xxxx", TimeSpan.FromSeconds(10));
        connection.Abort();
        connection.Dispose();

        JsonElement state = default;
        bool closed = await TestSupport.EventuallyAsync(async () =>
        {
            state = (await RawHttp.GetAsync(server, $"/closed?id={id}")).Json();
            return state.TryGetProperty("closed", out JsonElement value) && value.GetBoolean();
        }, TimeSpan.FromSeconds(15));
        Assert.True(closed, $"close() was not called: {state}");
        Assert.True(state.GetProperty("yielded").GetInt32() < 512, $"the whole iterable ran for a client that was gone: {state}");
        await AssertServesAsync(server);
    }

    /// <summary>TLS listeners are Kestrel's: a TCP half-close after the request, at once or while the application runs.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(300)]
    public async Task Tls_request_followed_by_a_half_close_is_answered(int finAfterMs)
    {
        var (cert, keyFile) = TlsTests.WriteSelfSigned(_dir, "CN=osprey-halfclose");
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = SlowApp,
            Args = ["--certfile", cert, "--keyfile", keyFile],
        });
        for (int attempt = 0; attempt < (finAfterMs == 0 ? Attempts : 1); attempt++)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port));
            using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "127.0.0.1",
                ApplicationProtocols = [SslApplicationProtocol.Http11],
                RemoteCertificateValidationCallback = static (_, _, _, _) => true,
            });
            await tls.WriteAsync(Encoding.ASCII.GetBytes("GET /sleep?s=0.6 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
            await tls.FlushAsync();
            if (finAfterMs > 0)
            {
                await Task.Delay(finAfterMs);
            }
            // A FIN without close_notify, as a client's shutdown(SHUT_WR) under its TLS library.
            socket.Shutdown(SocketShutdown.Send);
            string received = await ReadTlsToEndAsync(tls);
            Assert.True(received.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal) && received.Contains("LATE-OUTPUT", StringComparison.Ordinal),
                $"attempt {attempt + 1}: '{received}'");
        }
    }

    private static async Task<RawHttpResponse> ReadAsync(RawHttpConnection connection, string what)
    {
        try
        {
            return await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(20));
        }
        catch (ConnectionClosedByServerException e)
        {
            Assert.Fail($"{what}: the server closed the half-closed connection without answering ({e.Message})");
            throw;
        }
    }

    private static async Task<string> ReadTlsToEndAsync(SslStream tls)
    {
        var received = new MemoryStream();
        var buffer = new byte[16 * 1024];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            int n;
            while ((n = await tls.ReadAsync(buffer, timeout.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }
        catch (IOException)
        {
            // A reset or a close without close_notify ends what there is to read.
        }
        return Encoding.Latin1.GetString(received.ToArray());
    }
}
