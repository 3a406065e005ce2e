using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>wsgi.input: every read style, end of input, chunked and large bodies, Expect: 100-continue (input_app.py, response_app.py).</summary>
public sealed class InputTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private const string App = "input_app:app";
    private const string Body = "line1\nline2\nlast";

    private async Task<(List<string> Parts, System.Text.Json.JsonElement Json)> PostAsync(
        string engine, string target, string body = Body, bool chunked = false)
    {
        var server = await pool.GetAsync(engine, App);
        var request = chunked
            ? RawHttp.Request("POST", target, server.Port, ["Transfer-Encoding: chunked"],
                RawHttp.Chunked(SplitInto(body, 3)))
            : RawHttp.Request("POST", target, server.Port, body: Encoding.Latin1.GetBytes(body));
        var response = await RawHttp.SendAsync(server.Port, request);
        Assert.True(response.StatusCode == 200, response.ToString());
        var json = response.Json();
        Assert.True(json.GetProperty("all_bytes").GetBoolean(), $"wsgi.input returned non-bytes: {response.BodyText}");
        return (Strings(json.GetProperty("parts")), json);
    }

    private static string[] SplitInto(string text, int pieces)
    {
        var size = Math.Max(1, (text.Length + pieces - 1) / pieces);
        return [.. text.Chunk(size).Select(c => new string(c))];
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Read_returns_the_whole_body(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/read");
        Assert.Equal([Body], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Read_n_returns_n_bytes_at_a_time_then_empty(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/readn?n=5");
        Assert.Equal(["line1", "\nline", "2\nlas", "t"], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Readline_returns_one_line_at_a_time(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/readline");
        Assert.Equal(["line1\n", "line2\n", "last"], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Readline_with_size_stops_at_size_or_newline(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/readline_n?n=3");
        Assert.Equal(["lin", "e1\n", "lin", "e2\n", "las", "t"], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Readlines_returns_all_lines(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/readlines");
        Assert.Equal(["line1\n", "line2\n", "last"], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Readlines_with_hint_returns_whole_lines_and_loses_nothing(string engine)
    {
        // PEP 3333 lets the server ignore the hint, so only whole lines and no lost bytes are required.
        var (parts, json) = await PostAsync(engine, "/readlines_hint?hint=3");
        Assert.NotEmpty(parts);
        Assert.Equal("line1\n", parts[0]);
        Assert.All(parts.SkipLast(1), p => Assert.EndsWith("\n", p, StringComparison.Ordinal));
        Assert.Equal(Body, string.Concat(parts) + json.GetProperty("rest").GetString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Iterating_the_input_yields_lines(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/iter");
        Assert.Equal(["line1\n", "line2\n", "last"], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Reading_past_the_end_returns_empty_bytes_at_once(string engine)
    {
        var watch = Stopwatch.StartNew();
        var (parts, json) = await PostAsync(engine, "/past_end");
        watch.Stop();

        Assert.Equal([Body], parts);
        Assert.Equal(["", "", ""], Strings(json.GetProperty("again")));
        Assert.Equal(["bytes", "bytes", "bytes"], Strings(json.GetProperty("again_types")));
        Assert.True(json.GetProperty("elapsed").GetDouble() < 0.5, $"reads past the end took {json.GetProperty("elapsed")} s");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3), $"request took {watch.Elapsed}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Reading_past_the_end_of_a_chunked_body_returns_empty_bytes_at_once(string engine)
    {
        var (parts, json) = await PostAsync(engine, "/past_end", chunked: true);

        Assert.Equal([Body], parts);
        Assert.Equal(["", "", ""], Strings(json.GetProperty("again")));
        Assert.True(json.GetProperty("elapsed").GetDouble() < 0.5, $"reads past the end took {json.GetProperty("elapsed")} s");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Read_without_a_body_returns_empty_bytes_without_blocking(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var watch = Stopwatch.StartNew();
        var response = await RawHttp.GetAsync(server, "/read");
        Assert.True(response.StatusCode == 200, response.ToString());
        Assert.Equal([""], Strings(response.Json().GetProperty("parts")));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3), $"request took {watch.Elapsed}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Chunked_request_body_arrives_dechunked(string engine)
    {
        var (parts, _) = await PostAsync(engine, "/read", chunked: true);
        Assert.Equal([Body], parts);

        var (lines, _) = await PostAsync(engine, "/readline", chunked: true);
        Assert.Equal(["line1\n", "line2\n", "last"], lines);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Every_byte_value_arrives_unchanged(string engine)
    {
        var all = new string([.. Enumerable.Range(0, 256).Select(i => (char)i)]);
        var (parts, _) = await PostAsync(engine, "/read", all + all);
        Assert.Equal([all + all], parts);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Large_body_arrives_intact_with_content_length(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var body = LargeBody(5 * 1024 * 1024 + 7);
        var expected = Convert.ToHexStringLower(SHA256.HashData(body));

        foreach (var target in new[] { "/sha256?n=65536", "/sha256?n=0" })
        {
            var response = await RawHttp.SendAsync(server.Port, RawHttp.Request("POST", target, server.Port, body: body),
                timeout: TimeSpan.FromSeconds(20));
            Assert.True(response.StatusCode == 200, response.ToString());
            var json = response.Json();
            Assert.Equal(body.Length, json.GetProperty("length").GetInt32());
            Assert.Equal(expected, json.GetProperty("sha256").GetString());
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Mixed_read_styles_on_one_body_return_every_byte_once_and_in_order(string engine)
    {
        // 40 lines of 1000 bytes. read(n) with the stream's own buffer empty fills a bytes object
        // straight from the engine; readline fills that buffer (16 KB), and the reads after it
        // take what it holds first: both paths take turns on one body.
        var body = string.Concat(Enumerable.Range(0, 40).Select(i => new string((char)('a' + i % 26), 999) + "\n"));
        foreach (var chunked in new[] { false, true })
        {
            var (parts, json) = await PostAsync(engine, "/mixed", body, chunked);
            Assert.Equal(body, string.Concat(parts));
            var lengths = json.GetProperty("lengths").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal([5, 995, 1000, 15384, 7, 609, 22000, 0, 0], lengths);
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Large_chunked_body_arrives_intact(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var body = LargeBody(5 * 1024 * 1024 + 3);
        var expected = Convert.ToHexStringLower(SHA256.HashData(body));
        var framed = new MemoryStream();
        foreach (var piece in body.Chunk(100_000))
        {
            framed.Write(Encoding.ASCII.GetBytes($"{piece.Length:x}\r\n"));
            framed.Write(piece);
            framed.Write("\r\n"u8);
        }
        framed.Write("0\r\n\r\n"u8);

        var response = await RawHttp.SendAsync(server.Port,
            RawHttp.Request("POST", "/sha256?n=10000", server.Port, ["Transfer-Encoding: chunked"], framed.ToArray()),
            timeout: TimeSpan.FromSeconds(20));
        Assert.True(response.StatusCode == 200, response.ToString());
        var json = response.Json();
        Assert.Equal(body.Length, json.GetProperty("length").GetInt32());
        Assert.Equal(expected, json.GetProperty("sha256").GetString());
    }

    /// <summary>
    /// Bodies that arrive whole with their heads, several requests in one packet: the lean engine
    /// serves each body from where it lies in its input buffer, so every read must see exactly its
    /// own body, and the next request must start right after it.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Pipelined_bodies_in_one_packet_each_reach_their_own_request(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([
            .. RawHttp.Request("POST", "/readn?n=5", server.Port, body: Encoding.Latin1.GetBytes(Body)),
            .. RawHttp.Request("POST", "/read", server.Port, body: "second"u8.ToArray()),
            .. RawHttp.Request("POST", "/ignore", server.Port, body: "GET /x HTTP/1.1\r\n\r\n"u8.ToArray()),
            .. RawHttp.Request("POST", "/readline", server.Port, body: "a\nbc\n"u8.ToArray()),
            .. RawHttp.Request("POST", "/read", server.Port, body: []),
        ]);

        var first = await connection.ReadResponseAsync();
        Assert.True(first.StatusCode == 200, first.ToString());
        Assert.Equal(["line1", "\nline", "2\nlas", "t"], Strings(first.Json().GetProperty("parts")));
        var second = await connection.ReadResponseAsync();
        Assert.Equal(["second"], Strings(second.Json().GetProperty("parts")));
        var third = await connection.ReadResponseAsync();
        Assert.True(third.Json().GetProperty("ignored").GetBoolean(), third.ToString());
        var fourth = await connection.ReadResponseAsync();
        Assert.Equal(["a\n", "bc\n"], Strings(fourth.Json().GetProperty("parts")));
        var fifth = await connection.ReadResponseAsync();
        Assert.Equal([""], Strings(fifth.Json().GetProperty("parts")));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Unread_body_does_not_corrupt_the_next_request_on_the_connection(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        // The app ignores the body; it must not be taken for the start of the next request.
        await connection.SendAsync([
            .. RawHttp.Request("POST", "/ignore", server.Port, body: "GARBAGE / HTTP/1.1\r\n\r\n"u8.ToArray()),
            .. RawHttp.Request("POST", "/read", server.Port, body: "second"u8.ToArray()),
        ]);

        var first = await connection.ReadResponseAsync();
        Assert.Equal(200, first.StatusCode);
        Assert.True(first.Json().GetProperty("ignored").GetBoolean());

        // Closing instead of draining is allowed; answering the body as if it were a request is not.
        if (!first.ConnectionClosed)
        {
            RawHttpResponse? second = null;
            try
            {
                second = await connection.ReadResponseAsync();
            }
            catch (ConnectionClosedByServerException)
            {
                // Closed: fine.
            }
            if (second is not null)
            {
                Assert.True(second.StatusCode == 200, second.ToString());
                Assert.Equal(["second"], Strings(second.Json().GetProperty("parts")));
            }
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Expect_100_continue_is_sent_when_the_app_reads_the_body(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Request("POST", "/expect", server.Port,
            ["Expect: 100-continue", "Content-Length: 5"]));

        // The body is withheld until the server invites it.
        var interim = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5));
        Assert.Equal("HTTP/1.1 100 Continue", interim.StatusLine);

        await connection.SendAsync("hello");
        var final = await connection.ReadResponseAsync();
        Assert.Equal(200, final.StatusCode);
        Assert.Equal("got:hello", final.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Expect_100_continue_is_not_sent_when_the_app_ignores_the_body(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Request("POST", "/expect_ignore", server.Port,
            ["Expect: 100-continue", "Content-Length: 5"]));

        var first = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5));
        Assert.True(first.StatusCode == 200, $"expected the final response first, got: {first}");
        Assert.Equal("ignored", first.BodyText);
    }

    /// <summary>
    /// An application that starts its response before it reads the body of an Expect request:
    /// no 100 may precede the response any more, but a client that sends the body anyway has it read.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Expect_body_sent_anyway_is_read_after_the_response_started(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Request("POST", "/expect_stream_then_read", server.Port,
            ["Expect: 100-continue", "Content-Length: 5"], "hello"u8.ToArray()));

        var response = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
        Assert.True(response.StatusCode == 200, response.ToString());
        Assert.Equal("head-sent;read=hello", response.BodyText);
    }

    /// <summary>
    /// A final response to an Expect request whose body the application did not read either says
    /// that the connection closes (the client may never send the body), or the server reads past
    /// the body and answers the next request; never a silent close that loses a pipelined request.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Expect_unread_body_never_silently_drops_the_next_request(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([
            .. RawHttp.Request("POST", "/expect_ignore", server.Port, ["Expect: 100-continue", "Content-Length: 5"], "hello"u8.ToArray()),
            .. RawHttp.Get("/list1", server.Port)]);

        var first = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
        Assert.Equal("ignored", first.BodyText);
        if (first.Header("Connection") == "close")
        {
            await connection.ReadToCloseAsync(TimeSpan.FromSeconds(10));
            return;
        }
        var next = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
        Assert.Equal("hello", next.BodyText);
    }

    private static byte[] LargeBody(int size)
    {
        var body = new byte[size];
        new Random(1234).NextBytes(body);
        return body;
    }
}
