using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Proxy;

/// <summary>
/// --proxy-protocol over raw sockets: a PROXY v1/v2 header from a trusted peer (127.0.0.1, by
/// the default --forwarded-allow-ips) sets the connection's addresses; a malformed one closes
/// the connection; from an untrusted peer the header is just a bad HTTP request.
/// </summary>
public sealed class ProxyProtocolTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private const string App = "environ_app:app";
    private static readonly string[] Trusted = ["--proxy-protocol"];
    private static readonly string[] Untrusted = ["--proxy-protocol", "--forwarded-allow-ips", "192.0.2.1"];
    private static readonly TimeSpan CloseTimeout = TimeSpan.FromSeconds(10);

    private const string V1Tcp4 = "PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\r\n";

    private static byte[] V2Inet(byte command = 0x21) =>
        ProxyProtocolParserTests.V2(command, 0x11, [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90]);

    /// <summary>Sends <paramref name="header"/> then a request on one connection; returns the environ and the connection's local port.</summary>
    private async Task<(JsonElement Environ, int ClientPort)> ThroughProxyAsync(string engine, byte[] header, string[]? serverArgs = null,
        byte[]? request = null)
    {
        OspreyServer server = await pool.GetAsync(engine, App, serverArgs ?? Trusted);
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. header, .. request ?? RawHttp.Get("/", server.Port)]);
        return (Environ(await connection.ReadResponseAsync()), connection.LocalPort);
    }

    private static byte[] Ascii(string text) => Encoding.ASCII.GetBytes(text);

    private static byte[] Http10WithoutHost() => Ascii("GET / HTTP/1.0\r\n\r\n");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task V1_tcp4_sets_remote_and_server_addresses(string engine)
    {
        // HTTP/1.0 without Host: SERVER_NAME/SERVER_PORT come from the connection's (proxied) destination.
        var (env, _) = await ThroughProxyAsync(engine, Ascii(V1Tcp4), request: Http10WithoutHost());

        Assert.Equal("203.0.113.5", Str(env, "REMOTE_ADDR"));
        Assert.Equal("51234", Str(env, "REMOTE_PORT"));
        Assert.Equal("192.0.2.10", Str(env, "SERVER_NAME"));
        Assert.Equal("8080", Str(env, "SERVER_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task V1_tcp6_sets_the_ipv6_client(string engine)
    {
        var (env, _) = await ThroughProxyAsync(engine, Ascii("PROXY TCP6 2001:db8::5 2001:db8::1 40000 443\r\n"));

        Assert.Equal("2001:db8::5", Str(env, "REMOTE_ADDR"));
        Assert.Equal("40000", Str(env, "REMOTE_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task V1_unknown_keeps_the_real_peer(string engine)
    {
        var (env, clientPort) = await ThroughProxyAsync(engine, Ascii("PROXY UNKNOWN\r\n"));

        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal(clientPort.ToString(CultureInfo.InvariantCulture), Str(env, "REMOTE_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task V2_proxy_sets_the_client_and_local_keeps_the_real_peer(string engine)
    {
        var (env, _) = await ThroughProxyAsync(engine, V2Inet(), request: Http10WithoutHost());
        Assert.Equal("203.0.113.5", Str(env, "REMOTE_ADDR"));
        Assert.Equal("51234", Str(env, "REMOTE_PORT"));
        Assert.Equal("192.0.2.10", Str(env, "SERVER_NAME"));
        Assert.Equal("8080", Str(env, "SERVER_PORT"));

        byte[] v6 = ProxyProtocolParserTests.V2(0x21, 0x21,
            [.. IPAddress.Parse("2001:db8::5").GetAddressBytes(), .. IPAddress.Parse("2001:db8::1").GetAddressBytes(), 0x9C, 0x40, 0x01, 0xBB],
            tlvs: [0x04, 0x00, 0x03, 0x61, 0x62, 0x63]);
        (env, _) = await ThroughProxyAsync(engine, v6);
        Assert.Equal("2001:db8::5", Str(env, "REMOTE_ADDR"));
        Assert.Equal("40000", Str(env, "REMOTE_PORT"));

        // LOCAL: the proxy's own health check; the addresses in it are to be ignored.
        var (local, clientPort) = await ThroughProxyAsync(engine, V2Inet(command: 0x20));
        Assert.Equal("127.0.0.1", Str(local, "REMOTE_ADDR"));
        Assert.Equal(clientPort.ToString(CultureInfo.InvariantCulture), Str(local, "REMOTE_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Keep_alive_requests_after_the_header_keep_the_proxied_address(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, Trusted);
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. Ascii(V1Tcp4), .. RawHttp.Get("/1", server.Port)]);
        Assert.Equal("203.0.113.5", Str(Environ(await connection.ReadResponseAsync()), "REMOTE_ADDR"));
        for (int i = 2; i <= 3; i++)
        {
            await connection.SendAsync(RawHttp.Get($"/{i}", server.Port));
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.False(response.ConnectionClosed);
            JsonElement env = Environ(response);
            Assert.Equal($"/{i}", Str(env, "PATH_INFO"));
            Assert.Equal("203.0.113.5", Str(env, "REMOTE_ADDR"));
            Assert.Equal("51234", Str(env, "REMOTE_PORT"));
        }
        // A second PROXY line later in the connection is not a header, just a bad request
        // (ended by an empty line: the lean engine waits for a whole head before judging it).
        await connection.SendAsync(Ascii(V1Tcp4 + "\r\n"));
        Assert.Equal(400, (await connection.ReadResponseAsync()).StatusCode);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_header_arriving_in_pieces_is_waited_for(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, Trusted);
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        byte[] header = V2Inet();
        await connection.SendAsync(header[..5]);
        await Task.Delay(100);
        await connection.SendAsync(header[5..20]);
        await Task.Delay(100);
        await connection.SendAsync([.. header[20..], .. RawHttp.Get("/", server.Port)]);
        Assert.Equal("203.0.113.5", Str(Environ(await connection.ReadResponseAsync()), "REMOTE_ADDR"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_stalled_header_is_cut_by_the_header_timeout(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--proxy-protocol", "--header-timeout", "1");
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(Ascii("PROXY TCP4 203.0.113.5"));
        // The lean engine answers 408 as to any stalled head; Kestrel has no HTTP yet and just closes.
        byte[] answer = await connection.ReadToCloseAsync(TimeSpan.FromSeconds(15));
        string text = Encoding.Latin1.GetString(answer);
        Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 408 ", StringComparison.Ordinal), $"unexpected answer: {text}");
        Assert.Equal("127.0.0.1", Str(Environ(await RawHttp.GetAsync(server, "/")), "REMOTE_ADDR"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Plain_http_from_a_trusted_peer_is_served_as_before(string engine)
    {
        var (env, clientPort) = await ThroughProxyAsync(engine, []);

        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal(clientPort.ToString(CultureInfo.InvariantCulture), Str(env, "REMOTE_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Forwarded_headers_after_a_proxy_header_are_judged_by_the_proxied_client(string engine)
    {
        // The client behind the TCP proxy (203.0.113.5) is not trusted, so what it claims in X-Forwarded-For is not believed.
        OspreyServer server = await pool.GetAsync(engine, App, Trusted);
        var (env, _) = await ThroughProxyAsync(engine, Ascii(V1Tcp4), request: RawHttp.Get("/", server.Port, "X-Forwarded-For: 198.51.100.1"));

        Assert.Equal("203.0.113.5", Str(env, "REMOTE_ADDR"));
        Assert.Equal("198.51.100.1", Str(env, "HTTP_X_FORWARDED_FOR"));
    }

    public static TheoryData<string, string> MalformedHeaders()
    {
        string[] headers =
        [
            "PROXY TCP4 300.0.113.5 192.0.2.10 51234 8080\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.10 51234\r\n",
            "PROXY TCP5 203.0.113.5 192.0.2.10 51234 8080\r\n",
            "PROXY TCP6 203.0.113.5 192.0.2.10 51234 8080\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.10 70000 8080\r\n",
            "PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\n",
            "PROXY UNKNOWN " + new string('x', 120),
            "v2-version-1",
            "v2-too-long",
            "v2-short-address",
        ];
        return Engines.Cross(headers);
    }

    [Theory, MemberData(nameof(MalformedHeaders))]
    public async Task A_malformed_header_closes_the_connection_without_a_response(string engine, string header)
    {
        byte[] bytes = header switch
        {
            "v2-version-1" => ProxyProtocolParserTests.V2(0x11, 0x11, [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90]),
            "v2-too-long" => [.. ProxyProtocolParserTests.V2(0x21, 0x11, [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90])[..14], 0xFF, 0xFF],
            "v2-short-address" => ProxyProtocolParserTests.V2(0x21, 0x11, [203, 0, 113, 5, 192, 0, 2, 10]),
            _ => Encoding.Latin1.GetBytes(header),
        };
        OspreyServer server = await pool.GetAsync(engine, App, Trusted);
        int mark = server.ErrorLogPosition;
        using (RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port))
        {
            await connection.SendAsync([.. bytes, .. RawHttp.Get("/", server.Port)]);
            byte[] answer = await connection.ReadToCloseAsync(CloseTimeout);
            Assert.True(answer.Length == 0, $"expected a close without a response, got: {Encoding.Latin1.GetString(answer)}");
        }
        await server.WaitForLogAsync("malformed PROXY protocol header from 127.0.0.1: connection closed", LogTimeout, mark);
        // Nothing else is affected.
        Assert.Equal("127.0.0.1", Str(Environ(await RawHttp.GetAsync(server, "/")), "REMOTE_ADDR"));
        AssertNoDotNetStackTrace(server.ErrorLog);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_proxy_header_from_an_untrusted_peer_is_a_bad_request(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, Untrusted);
        foreach (byte[] header in new[] { Ascii(V1Tcp4), V2Inet() })
        {
            using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
            await connection.SendAsync([.. header, .. RawHttp.Get("/", server.Port)]);
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.Equal(400, response.StatusCode);
        }
        // The same server serves plain HTTP, with the real peer.
        var (env, _) = await ThroughProxyAsync(engine, [], Untrusted);
        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
    }

    /// <summary>gunicorn's --proxy-allow-from: its own list of the peers whose PROXY header is accepted.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Proxy_allow_from_decides_whose_proxy_header_is_accepted(string engine)
    {
        var (env, _) = await ThroughProxyAsync(engine, Ascii(V1Tcp4),
            ["--proxy-protocol", "--forwarded-allow-ips", "192.0.2.1", "--proxy-allow-from", "127.0.0.1"]);
        Assert.Equal("203.0.113.5", Str(env, "REMOTE_ADDR"));

        OspreyServer server = await pool.GetAsync(engine, App, "--proxy-protocol", "--proxy-allow-from", "192.0.2.1");
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. Ascii(V1Tcp4), .. RawHttp.Get("/", server.Port)]);
        Assert.Equal(400, (await connection.ReadResponseAsync()).StatusCode);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Without_the_option_a_proxy_header_is_a_bad_request_even_from_a_trusted_peer(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. Ascii(V1Tcp4), .. RawHttp.Get("/", server.Port)]);
        Assert.Equal(400, (await connection.ReadResponseAsync()).StatusCode);
    }
}
