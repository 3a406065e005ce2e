using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Hostile.HostileSupport;

namespace Osprey.Tests.Hostile;

/// <summary>
/// Requests RFC 9110/9112 say a server must not guess at (the raw material of request smuggling):
/// each is answered 400 and the connection closed, on both engines, before the application runs.
/// Every request carries a marker in its target, and, where a body could be mistaken for a second
/// request, a smuggled request with the same marker; the app must never have seen either.
/// </summary>
public sealed class RefusalTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private const string Smuggled = "GET /smuggled?MARK HTTP/1.1\r\nHost: h\r\n\r\n";

    /// <summary>Name → raw request; MARK is replaced by a fresh marker, HOST by a valid Host header line.</summary>
    private static readonly Dictionary<string, string> s_cases = new()
    {
        ["content_length_and_transfer_encoding"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_and_content_length"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n" + Smuggled,
        ["two_different_content_lengths"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n" + Smuggled,
        ["content_length_list"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 0, 44\r\n\r\n" + Smuggled,
        ["transfer_encoding_chunked_identity"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_identity_chunked"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_gzip_chunked"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_xchunked"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_twice"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        // " chunked" as smuggling write-ups use it: a header line that starts with whitespace.
        ["transfer_encoding_line_starts_with_space"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        // Whitespace that is not OWS (SP/HTAB) before the value.
        ["transfer_encoding_vertical_tab_chunked"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["transfer_encoding_on_http_1_0"] =
            "POST /r?MARK HTTP/1.0\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + Smuggled,
        ["chunk_size_not_hex"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ["chunk_size_negative"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        ["chunk_size_overflow"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        ["chunk_size_empty"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
        ["chunk_extension_with_bare_cr"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\rc\r\nhello\r\n0\r\n\r\n",
        ["chunk_extension_with_bare_lf"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n45\r\n0\r\n\r\n" + Smuggled,
        ["chunk_data_longer_than_its_size"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        ["obs_fold"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Folded: a\r\n b\r\n\r\n",
        ["obs_fold_with_tab"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Folded: a\r\n\tb\r\n\r\n",
        ["space_before_colon"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name : value\r\n\r\n",
        ["tab_before_colon"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name\t: value\r\n\r\n",
        ["nul_in_header_value"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name: a\0b\r\n\r\n",
        ["cr_in_header_value"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name: a\rb\r\n\r\n",
        ["lf_in_header_value"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name: a\nb\r\n\r\n",
        // A bare LF as a line end (RFC 9112 lets a recipient accept it; a proxy that does not reads other headers).
        ["bare_lf_line_ends"] =
            "GET /r?MARK HTTP/1.1\nHOST\n\n",
        ["bare_lf_after_the_request_line"] =
            "GET /r?MARK HTTP/1.1\nHOST\r\n\r\n",
        ["bare_lf_after_a_header"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\n\r\n",
        ["bare_lf_ending_the_head"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\n\n",
        ["bare_lf_starting_a_hidden_header"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nX-Name: a\nContent-Length: 44\r\n\r\n" + Smuggled,
        ["control_character_in_header_value"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name: a\u0001b\r\n\r\n",
        ["header_without_colon"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX-Name value\r\n\r\n",
        ["header_name_with_invalid_character"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nX(Name): value\r\n\r\n",
        ["missing_host_on_http_1_1"] =
            "GET /r?MARK HTTP/1.1\r\nX-Name: value\r\n\r\n",
        ["duplicated_host_on_http_1_1"] =
            "GET /r?MARK HTTP/1.1\r\nHOST\r\nHost: other.example\r\n\r\n",
        ["duplicated_host_on_http_1_0"] =
            "GET /r?MARK HTTP/1.0\r\nHOST\r\nHost: other.example\r\n\r\n",
        ["invalid_method_token"] =
            "G(T /r?MARK HTTP/1.1\r\nHOST\r\n\r\n",
        ["method_with_control_character"] =
            "GE\u0001T /r?MARK HTTP/1.1\r\nHOST\r\n\r\n",
        ["target_not_origin_form"] =
            "GET r?MARK HTTP/1.1\r\nHOST\r\n\r\n",
        ["target_with_control_character"] =
            "GET /r\u0001?MARK HTTP/1.1\r\nHOST\r\n\r\n",
        ["target_with_space"] =
            "GET /r ?MARK HTTP/1.1\r\nHOST\r\n\r\n",
        ["asterisk_target_for_get"] =
            "GET * HTTP/1.1\r\nHOST\r\nX-Marker: MARK\r\n\r\n",
        ["version_garbage"] =
            "GET /r?MARK HTXP/1.1\r\nHOST\r\n\r\n",
        ["version_lower_case"] =
            "GET /r?MARK http/1.1\r\nHOST\r\n\r\n",
        ["version_missing"] =
            "GET /r?MARK\r\nHOST\r\n\r\n",
        ["content_length_negative"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: -5\r\n\r\nhello",
        ["content_length_not_numeric"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: five\r\n\r\nhello",
        ["content_length_trailing_junk"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 5x\r\n\r\nhello",
        ["content_length_hex"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 0x5\r\n\r\nhello",
        ["content_length_overflow"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        // The trailer section is field lines (RFC 9112 §7.1.2): a request line there is not one.
        ["request_line_in_chunked_trailer"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" + Smuggled,
        ["trailer_without_colon"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer value\r\n\r\n",
        ["trailer_name_with_space"] =
            "POST /r?MARK HTTP/1.1\r\nHOST\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX Trailer: value\r\n\r\n",
        // RFC 9112 §3.2: a Host that is not `host [":" port]` (SERVER_NAME and SERVER_PORT come from it).
        ["host_with_slash"] =
            "GET /r?MARK HTTP/1.1\r\nHost: a/b\r\n\r\n",
        ["host_with_space"] =
            "GET /r?MARK HTTP/1.1\r\nHost: a b\r\n\r\n",
        ["host_with_userinfo"] =
            "GET /r?MARK HTTP/1.1\r\nHost: good.example@evil.example\r\n\r\n",
        ["host_with_non_numeric_port"] =
            "GET /r?MARK HTTP/1.1\r\nHost: example.com:abc\r\n\r\n",
        ["host_with_empty_port"] =
            "GET /r?MARK HTTP/1.1\r\nHost: example.com:\r\n\r\n",
        // RFC 9112 §3.2: an absolute-form target's authority and the Host must agree (the application reads
        // HTTP_HOST; a proxy in front may have routed by the target).
        ["absolute_form_with_another_host"] =
            "GET http://other.example/r?MARK HTTP/1.1\r\nHost: example.com\r\n\r\n",
        // RFC 9110 §9.3.6: a 2xx answer to CONNECT is a tunnel, which no WSGI application can open.
        ["connect"] =
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nX-Mark: MARK\r\n\r\n",
        ["absolute_form_with_another_port"] =
            "GET http://example.com:8080/r?MARK HTTP/1.1\r\nHost: example.com\r\n\r\n",
    };

    public static TheoryData<string, string> Cases => Engines.Cross(s_cases.Keys);

    [Theory, MemberData(nameof(Cases))]
    public async Task Is_refused_with_400_and_the_connection_closed(string engine, string name)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string marker = "m" + Guid.NewGuid().ToString("N");
        string request = s_cases[name].Replace("MARK", marker, StringComparison.Ordinal)
            .Replace("HOST", $"Host: 127.0.0.1:{server.Port}", StringComparison.Ordinal);

        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(server.Port, request);
        using (connection)
        {
            Assert.True(response is not null, $"{name}: the server closed the connection without an answer");
            int[] accepted = name switch
            {
                // Kestrel's parser (both engines use it) calls an unparsable version unsupported.
                "version_garbage" or "version_lower_case" => [400, 505],
                // Kestrel answers "GET *" as a method the asterisk form does not allow.
                "asterisk_target_for_get" => [400, 405],
                "connect" => [501],
                _ => [400],
            };
            Assert.True(accepted.Contains(response.StatusCode), $"{name}: expected {string.Join(" or ", accepted)}, got {response}");
            await AssertClosedAsync(connection, name);
        }
        Assert.Empty(await SeenAsync(server, marker));
        await AssertServesAsync(server);
    }

    /// <summary>A well-formed version the server does not speak: 505 is the precise answer (400 would do).</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Unsupported_http_version_is_refused_and_closed(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string marker = "m" + Guid.NewGuid().ToString("N");
        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(
            server.Port, $"GET /r?{marker} HTTP/1.7\r\nHost: 127.0.0.1\r\n\r\n");
        using (connection)
        {
            Assert.True(response is { StatusCode: 400 or 505 }, $"expected 400 or 505, got {response?.ToString() ?? "no answer"}");
            await AssertClosedAsync(connection, "HTTP/1.7");
        }
        Assert.Empty(await SeenAsync(server, marker));
    }

    /// <summary>
    /// RFC 9112 §2.2: empty lines before a request line are ignored, such as the CRLF some clients
    /// send after a POST body; the requests around them are answered on the same connection.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Empty_lines_before_a_request_line_are_ignored(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(
            "\r\nPOST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello\r\n" +
            "GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        RawHttpResponse first = await connection.ReadResponseAsync();
        Assert.Equal(200, first.StatusCode);
        Assert.Equal("hello", first.Json().GetProperty("body").GetString());
        RawHttpResponse second = await connection.ReadResponseAsync();
        Assert.Equal("ok GET /after", second.BodyText);
    }

    /// <summary>Valid Host forms, including the ones RFC 3986 allows that look odd, are served.</summary>
    [Theory]
    [InlineData("osprey", "[::1]:8080"), InlineData("kestrel", "[::1]:8080")]
    [InlineData("osprey", "example.com"), InlineData("kestrel", "example.com")]
    [InlineData("osprey", "192.0.2.1:80"), InlineData("kestrel", "192.0.2.1:80")]
    [InlineData("osprey", ""), InlineData("kestrel", "")]
    public async Task Valid_host_values_are_served(string engine, string host)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(
            server.Port, $"GET /alive HTTP/1.1\r\nHost: {host}\r\n\r\n");
        using (connection)
        {
            Assert.True(response is { StatusCode: 200 }, $"Host: {host}: {response?.ToString() ?? "no answer"}");
        }
    }

    /// <summary>An absolute-form target whose authority is the Host (the default port written or not) is served, its path as PATH_INFO.</summary>
    [Theory]
    [InlineData("osprey", "http://example.com/alive", "example.com"), InlineData("kestrel", "http://example.com/alive", "example.com")]
    [InlineData("osprey", "http://example.com/alive", "example.com:80"), InlineData("kestrel", "http://example.com/alive", "example.com:80")]
    [InlineData("osprey", "http://example.com:8080/alive", "example.com:8080"), InlineData("kestrel", "http://example.com:8080/alive", "example.com:8080")]
    public async Task Absolute_form_agreeing_with_host_is_served(string engine, string target, string host)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        (RawHttpResponse? response, RawHttpConnection connection) = await ExchangeAsync(
            server.Port, $"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        using (connection)
        {
            Assert.True(response is { StatusCode: 200, BodyText: "ok GET /alive" }, $"{target} with Host: {host}: {response?.ToString() ?? "no answer"}");
        }
    }

    /// <summary>A request hidden inside a Content-Length body is body, never a second request.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Request_inside_a_content_length_body_is_never_answered(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string marker = "m" + Guid.NewGuid().ToString("N");
        string hidden = $"GET /smuggled?{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(
            $"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {hidden.Length}\r\n\r\n{hidden}" +
            "GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        RawHttpResponse first = await connection.ReadResponseAsync();
        Assert.Equal(200, first.StatusCode);
        Assert.Equal(hidden, first.Json().GetProperty("body").GetString());
        RawHttpResponse second = await connection.ReadResponseAsync();
        Assert.Equal("ok GET /after", second.BodyText);
        Assert.Empty(await SeenAsync(server, marker));
    }

    /// <summary>The same inside a chunked body, with the hidden request split across chunks.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Request_inside_a_chunked_body_is_never_answered(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string marker = "m" + Guid.NewGuid().ToString("N");
        string hidden = $"GET /smuggled?{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        byte[] chunked = RawHttp.Chunked(hidden[..10], hidden[10..]);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([
            .. RawHttp.Request("POST", "/echo", server.Port, ["Transfer-Encoding: chunked"], chunked),
            .. RawHttp.Get("/after", server.Port)]);
        RawHttpResponse first = await connection.ReadResponseAsync();
        Assert.Equal(hidden, first.Json().GetProperty("body").GetString());
        Assert.Equal("ok GET /after", (await connection.ReadResponseAsync()).BodyText);
        Assert.Empty(await SeenAsync(server, marker));
    }
}
