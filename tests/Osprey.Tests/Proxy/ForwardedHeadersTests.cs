using System.Globalization;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Proxy;

/// <summary>
/// --forwarded-allow-ips: X-Forwarded-For/-Proto/-Host and Forwarded shape REMOTE_ADDR,
/// wsgi.url_scheme and HTTP_HOST (and SERVER_NAME/SERVER_PORT) only when the peer is trusted.
/// The tests connect from 127.0.0.1, which the default list trusts; the "untrusted" server
/// trusts only 192.0.2.1.
/// </summary>
public sealed class ForwardedHeadersTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private const string App = "environ_app:app";
    private static readonly string[] Untrusted = ["--forwarded-allow-ips", "192.0.2.1"];
    private static readonly string[] Chain = ["--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8"];
    private static readonly string[] Everyone = ["--forwarded-allow-ips", "*"];

    private static readonly string[] AllProxyHeaders =
    [
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: www.example.com",
        "Forwarded: for=198.51.100.9;proto=https;host=forwarded.example",
    ];

    private async Task<(OspreyServer Server, JsonElement Environ)> GetAsync(string engine, string[] serverArgs, params string[] headers)
    {
        OspreyServer server = await pool.GetAsync(engine, App, serverArgs);
        RawHttpResponse response = await RawHttp.SendAsync(server.Port, RawHttp.Get("/", server.Port, headers));
        return (server, Environ(response));
    }

    private static string Port(OspreyServer server) => server.Port.ToString(CultureInfo.InvariantCulture);

    /// <summary>What the environ says when no proxy header had any effect.</summary>
    private static void AssertUnchanged(OspreyServer server, JsonElement env)
    {
        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.NotEqual("0", Str(env, "REMOTE_PORT"));
        Assert.Equal("http", Str(env, "wsgi.url_scheme"));
        Assert.Equal($"127.0.0.1:{Port(server)}", Str(env, "HTTP_HOST"));
        Assert.Equal("127.0.0.1", Str(env, "SERVER_NAME"));
        Assert.Equal(Port(server), Str(env, "SERVER_PORT"));
    }

    public static TheoryData<string, string, string> SecureSchemeHeaders => Cross3(
    [
        ("X-Forwarded-Ssl: on", "https"), ("X-Forwarded-Ssl: off", "http"),
        ("X-Forwarded-Protocol: ssl", "https"), ("X-Forwarded-Protocol: tls", "http"),
    ]);

    private static TheoryData<string, string, string> Cross3((string Header, string Scheme)[] cases)
    {
        var data = new TheoryData<string, string, string>();
        foreach (string engine in Engines.Names)
        {
            foreach ((string header, string scheme) in cases) data.Add(engine, header, scheme);
        }
        return data;
    }

    /// <summary>gunicorn's other secure_scheme_headers: from a trusted peer they set wsgi.url_scheme, from others nothing.</summary>
    [Theory, MemberData(nameof(SecureSchemeHeaders))]
    public async Task X_forwarded_ssl_and_protocol_from_a_trusted_peer_set_the_scheme(string engine, string header, string scheme)
    {
        var (_, env) = await GetAsync(engine, [], header);
        Assert.Equal(scheme, Str(env, "wsgi.url_scheme"));

        var (untrusted, ignored) = await GetAsync(engine, Untrusted, header);
        AssertUnchanged(untrusted, ignored);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task X_forwarded_proto_wins_over_x_forwarded_ssl(string engine)
    {
        var (_, env) = await GetAsync(engine, [], "X-Forwarded-Proto: http", "X-Forwarded-Ssl: on");
        Assert.Equal("http", Str(env, "wsgi.url_scheme"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task X_forwarded_for_from_a_trusted_peer_sets_remote_addr(string engine)
    {
        var (_, env) = await GetAsync(engine, [], "X-Forwarded-For: 203.0.113.7");

        Assert.Equal("203.0.113.7", Str(env, "REMOTE_ADDR"));
        // The header carries no port; the proxy's own port would be wrong, so 0, as uvicorn does.
        Assert.Equal("0", Str(env, "REMOTE_PORT"));
        Assert.Equal("203.0.113.7", Str(env, "HTTP_X_FORWARDED_FOR"));
        Assert.Equal("http", Str(env, "wsgi.url_scheme"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task X_forwarded_for_entries_left_of_the_first_untrusted_hop_are_not_believed(string engine)
    {
        // nginx's $proxy_add_x_forwarded_for appends the peer to what the client sent: the client wrote 198.51.100.1.
        var (_, env) = await GetAsync(engine, [], "X-Forwarded-For: 198.51.100.1, 203.0.113.7");
        Assert.Equal("203.0.113.7", Str(env, "REMOTE_ADDR"));

        // Repeated header lines are one list.
        (_, env) = await GetAsync(engine, [], "X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 203.0.113.8");
        Assert.Equal("203.0.113.8", Str(env, "REMOTE_ADDR"));
        Assert.Equal("198.51.100.1,203.0.113.8", Str(env, "HTTP_X_FORWARDED_FOR"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Trusted_networks_are_walked_past(string engine)
    {
        var (_, env) = await GetAsync(engine, Chain, "X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.1.2.3",
            "X-Forwarded-Proto: https, http", "X-Forwarded-Host: www.example.com, internal.lan:8080");

        Assert.Equal("203.0.113.7", Str(env, "REMOTE_ADDR"));
        // Scheme and host of the same hop: what the client-facing proxy received.
        Assert.Equal("https", Str(env, "wsgi.url_scheme"));
        Assert.Equal("www.example.com", Str(env, "HTTP_HOST"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Star_trusts_every_hop(string engine)
    {
        var (_, env) = await GetAsync(engine, Everyone, "X-Forwarded-For: 198.51.100.1, 203.0.113.7");

        Assert.Equal("198.51.100.1", Str(env, "REMOTE_ADDR"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task X_forwarded_proto_and_host_set_scheme_host_and_server_name(string engine)
    {
        var (_, env) = await GetAsync(engine, [], "X-Forwarded-Proto: https", "X-Forwarded-Host: www.example.com");

        Assert.Equal("https", Str(env, "wsgi.url_scheme"));
        Assert.Equal("www.example.com", Str(env, "HTTP_HOST"));
        Assert.Equal("www.example.com", Str(env, "SERVER_NAME"));
        Assert.Equal("443", Str(env, "SERVER_PORT"));
        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal("www.example.com", Str(env, "HTTP_X_FORWARDED_HOST"));

        (_, env) = await GetAsync(engine, [], "X-Forwarded-Host: [2001:db8::1]:8443");
        Assert.Equal("[2001:db8::1]", Str(env, "SERVER_NAME"));
        Assert.Equal("8443", Str(env, "SERVER_PORT"));
        Assert.Equal("http", Str(env, "wsgi.url_scheme"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Forwarded_sets_address_port_scheme_and_host(string engine)
    {
        var (_, env) = await GetAsync(engine, [], "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https;host=example.org");

        Assert.Equal("2001:db8:cafe::17", Str(env, "REMOTE_ADDR"));
        Assert.Equal("4711", Str(env, "REMOTE_PORT"));
        Assert.Equal("https", Str(env, "wsgi.url_scheme"));
        Assert.Equal("example.org", Str(env, "HTTP_HOST"));
        Assert.Equal("example.org", Str(env, "SERVER_NAME"));
        Assert.Equal("443", Str(env, "SERVER_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Forwarded_wins_over_x_forwarded(string engine)
    {
        var (_, env) = await GetAsync(engine, [], AllProxyHeaders);

        Assert.Equal("198.51.100.9", Str(env, "REMOTE_ADDR"));
        Assert.Equal("https", Str(env, "wsgi.url_scheme"));
        Assert.Equal("forwarded.example", Str(env, "HTTP_HOST"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task From_an_untrusted_peer_every_proxy_header_passes_through_and_changes_nothing(string engine)
    {
        var (server, env) = await GetAsync(engine, Untrusted, AllProxyHeaders);

        AssertUnchanged(server, env);
        Assert.Equal("203.0.113.7", Str(env, "HTTP_X_FORWARDED_FOR"));
        Assert.Equal("https", Str(env, "HTTP_X_FORWARDED_PROTO"));
        Assert.Equal("www.example.com", Str(env, "HTTP_X_FORWARDED_HOST"));
        Assert.Equal("for=198.51.100.9;proto=https;host=forwarded.example", Str(env, "HTTP_FORWARDED"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task The_same_headers_from_a_trusted_peer_do_change_the_environ(string engine)
    {
        // The control for the untrusted test above: same request, default list.
        var (_, env) = await GetAsync(engine, [], AllProxyHeaders);

        Assert.NotEqual("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal("https", Str(env, "wsgi.url_scheme"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Headers_of_one_request_do_not_carry_over_to_the_next_on_the_connection(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        using RawHttpConnection connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/", server.Port, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"));
        Assert.Equal("203.0.113.7", Str(Environ(await connection.ReadResponseAsync()), "REMOTE_ADDR"));

        await connection.SendAsync(RawHttp.Get("/", server.Port));
        JsonElement env = Environ(await connection.ReadResponseAsync());
        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal(connection.LocalPort.ToString(CultureInfo.InvariantCulture), Str(env, "REMOTE_PORT"));
        Assert.Equal("http", Str(env, "wsgi.url_scheme"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task The_access_log_names_the_forwarded_client(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App, "--access-logfile", "-");
        await RawHttp.SendAsync(server.Port, RawHttp.Get("/forwarded-log", server.Port, "X-Forwarded-For: 203.0.113.77"));
        await RawHttp.SendAsync(server.Port, RawHttp.Get("/direct-log", server.Port));

        Assert.True(await EventuallyAsync(() => Task.FromResult(server.Stdout.Contains("/direct-log", StringComparison.Ordinal)), TimeSpan.FromSeconds(10)),
            $"no access log line for /direct-log: {server.Stdout}");
        string[] lines = server.Stdout.Split('\n');
        Assert.StartsWith("203.0.113.77 - - [", lines.Single(l => l.Contains("/forwarded-log", StringComparison.Ordinal)), StringComparison.Ordinal);
        // The next request (another connection, none of the headers) is logged with its real peer again.
        Assert.StartsWith("127.0.0.1 - - [", lines.Single(l => l.Contains("/direct-log", StringComparison.Ordinal)), StringComparison.Ordinal);
    }

    public static TheoryData<string, string> MalformedHeaders()
    {
        string[] headers =
        [
            "X-Forwarded-For: garbage",
            "X-Forwarded-For: 203.0.113.7,",
            "X-Forwarded-For: 999.0.113.7",
            "X-Forwarded-For: 203.0.113",
            "X-Forwarded-For: ::zz",
            "X-Forwarded-For: 203.0.113.7:99999",
            "X-Forwarded-For: unknown",
            "X-Forwarded-For: caf\u00e9",
            "X-Forwarded-Proto: ftp",
            "X-Forwarded-Proto: https://",
            "X-Forwarded-Host: evil.example/path",
            "X-Forwarded-Host: user@evil.example",
            "X-Forwarded-Host: evil.example:port",
            "Forwarded: for=203.0.113.9;for=198.51.100.1;proto=https",
            "Forwarded: for=\"203.0.113.9;proto=https",
            "Forwarded: for=203.0.113.9:80;proto=https",
            "Forwarded: garbage",
            "Forwarded: =",
            "X_Forwarded_For: 203.0.113.7",
        ];
        return Engines.Cross(headers);
    }

    [Theory, MemberData(nameof(MalformedHeaders))]
    public async Task A_malformed_value_from_a_trusted_peer_is_ignored(string engine, string header)
    {
        var (server, env) = await GetAsync(engine, [], header);

        AssertUnchanged(server, env);
        AssertUnchanged(server, Environ(await RawHttp.GetAsync(server, "/")));
    }
}
