using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>
/// How responses go on the wire: Content-Length vs chunked vs close-delimited, a declared Content-Length
/// enforced, HEAD/204/304 without a body, streaming, keep-alive and pipelining, close() of the iterable (response_app.py).
/// </summary>
public sealed class ResponseFramingTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private Task<OspreyServer> ServerAsync(string engine) => pool.GetAsync(engine, "response_app:app", "--threads", "4");

    /// <summary>A server of the test's own, for tests whose errors (logged late) must not be seen by other tests.</summary>
    private static Task<OspreyServer> OwnServerAsync(string engine) => OspreyServer.StartAsync(engine, "response_app:app", "--threads", "4");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task One_element_list_gets_a_content_length(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/list1");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("5", response.Header("Content-Length"));
        Assert.False(response.HasHeader("Transfer-Encoding"), response.ToString());
        Assert.Equal("hello", response.BodyText);
        Assert.Equal("text/plain", response.Header("Content-Type"));
    }

    /// <summary>
    /// With one Python thread and many connections, finished responses wait for the event loop to
    /// send them (from the buffers they were staged in) while the next requests run: every byte
    /// must still be the application's, whatever the framing (three items with a length,
    /// chunked, one item).
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Response_items_arrive_intact_while_many_responses_wait_to_be_sent(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, "response_app:app", "--threads", "1");
        string[] targets = ["/echo_items", "/echo_items?chunked=1", "/echo_items?single=1"];
        await Task.WhenAll(Enumerable.Range(0, 16).Select(async client =>
        {
            var random = new Random(client);
            using var connection = await RawHttpConnection.OpenAsync(server.Port);
            for (var i = 0; i < 30; i++)
            {
                var body = new byte[random.Next(1, 15_000)];
                random.NextBytes(body);
                var target = targets[(client + i) % targets.Length];
                await connection.SendAsync(RawHttp.Request("POST", target, server.Port, body: body));
                var response = await connection.ReadResponseAsync();
                Assert.True(response.StatusCode == 200, response.ToString());
                byte[] expected = [.. Encoding.ASCII.GetBytes($"<{body.Length}>"), .. body, .. "</end>"u8];
                Assert.True(expected.AsSpan().SequenceEqual(response.Body),
                    $"{target}, request {i} of client {client}: the {response.Body.Length} bytes received are not the {expected.Length} sent");
            }
        }));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Multi_element_list_is_chunked_on_http_1_1(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/list3");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("chunked", response.Header("Transfer-Encoding"));
        Assert.False(response.HasHeader("Content-Length"), response.ToString());
        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.Equal("abbccc", response.BodyText);
        Assert.True(response.Complete);
        Assert.EndsWith("0\r\n\r\n", Encoding.Latin1.GetString(response.RawChunkedBody!), StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Multi_element_list_is_close_delimited_on_http_1_0(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Request("GET", "/list3", server.Port, version: "HTTP/1.0"));
        var response = await connection.ReadResponseAsync();

        Assert.Equal(200, response.StatusCode);
        Assert.False(response.HasHeader("Transfer-Encoding"), "no chunked coding for an HTTP/1.0 client: " + response);
        Assert.False(response.HasHeader("Content-Length"), response.ToString());
        Assert.Equal(BodyFraming.UntilClose, response.Framing);
        Assert.Equal("abbccc", response.BodyText);
        Assert.True(response.ConnectionClosed);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Http_1_0_connection_is_closed_after_the_response(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Request("GET", "/list1", server.Port, version: "HTTP/1.0"));
        var response = await connection.ReadResponseAsync();

        Assert.Equal("hello", response.BodyText);
        Assert.Empty(await connection.ReadToCloseAsync(TimeSpan.FromSeconds(5)));
        Assert.True(connection.ServerClosed);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Iterable_yielding_one_item_from_a_list_gets_a_content_length(string engine)
    {
        // Django's HttpResponse without CommonMiddleware: its iterator is a list iterator, which
        // the server can look ahead in without running application code.
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/iter1");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("5", response.Header("Content-Length"));
        Assert.False(response.HasHeader("Transfer-Encoding"), response.ToString());
        Assert.Equal("hello", response.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Tuple_iterator_of_several_items_is_chunked_and_complete(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/iter_tuple3");

        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.Equal("abbccc", response.BodyText);
        Assert.True(response.Complete);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Generator_of_one_item_stays_chunked_because_it_is_not_looked_ahead_in(string engine)
    {
        // Asking a generator for its next item could wait on the application (a stream), so its
        // first item must go out before the server knows it is the last.
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/gen1");

        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.Equal("only", response.BodyText);
        Assert.True(response.Complete);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Generator_is_chunked_and_empty_yields_do_not_end_the_body(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/gen");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal(BodyFraming.Chunked, response.Framing);
        // An empty yield written as a zero-size chunk would end the body after "g1".
        Assert.Equal("g1g2g3", response.BodyText);
        Assert.True(response.Complete);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Empty_generator_gives_an_empty_body_and_keeps_the_connection_usable(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/empty_gen", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var empty = await connection.ReadResponseAsync();
        Assert.Equal(200, empty.StatusCode);
        Assert.Empty(empty.Body);
        Assert.True(empty.Complete);
        Assert.True(empty.Framing is BodyFraming.Chunked or BodyFraming.ContentLength, empty.ToString());

        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Generator_output_is_streamed_not_buffered(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/slowgen?delay=0.8", server.Port));

        // The first chunk must be on the wire while the generator still sleeps before its second.
        await connection.WaitForBytesAsync("first;", TimeSpan.FromSeconds(5));
        var afterFirst = Stopwatch.StartNew();
        var response = await connection.ReadResponseAsync();
        afterFirst.Stop();

        Assert.Equal("first;second", response.BodyText);
        Assert.True(afterFirst.Elapsed >= TimeSpan.FromSeconds(0.5),
            $"the rest arrived {afterFirst.Elapsed.TotalSeconds:F3} s after the first chunk: the first chunk was held back until the generator finished");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Every_block_of_a_burst_is_on_the_wire_while_the_generator_pauses(string engine)
    {
        // The lean engine sends a stream's later blocks from its loop while the generator goes
        // on; none of them may wait for the block after it.
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/burst?n=6&delay=1.5", server.Port));

        await connection.WaitForBytesAsync("b5;", TimeSpan.FromSeconds(5));
        var afterBurst = Stopwatch.StartNew();
        var response = await connection.ReadResponseAsync();
        afterBurst.Stop();

        Assert.Equal("b0;b1;b2;b3;b4;b5;end", response.BodyText);
        Assert.True(response.Complete);
        // Held back, the burst would arrive with the last block (a gap near 0); a loaded machine
        // (the whole suite in parallel) has been seen to delay its delivery by 0.9 s of the 1.5.
        Assert.True(afterBurst.Elapsed >= TimeSpan.FromSeconds(0.3),
            $"the last block arrived {afterBurst.Elapsed.TotalSeconds:F3} s after the burst: the burst was held back until the generator went on");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Long_stream_of_small_blocks_arrives_whole_and_in_order_and_the_connection_is_reused(string engine)
    {
        // 30,000 blocks of 100 bytes (3 MB): more than the engine buffers for a connection, so
        // the Python thread waits for the client while the loop sends, and both send in turn.
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/many?count=30000&size=100", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var response = await connection.ReadResponseAsync();
        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.True(response.Complete);
        var expected = new StringBuilder();
        for (int i = 0; i < 30000; i++)
        {
            expected.Append($"{i}:".PadRight(100, '.'));
        }
        Assert.Equal(expected.Length, response.Body.Length);
        Assert.True(expected.ToString() == response.BodyLatin1, "the streamed body differs from the blocks yielded, in content or order");

        Assert.Equal("hello", (await connection.ReadResponseAsync()).BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Short_content_length_closes_the_connection(string engine)
    {
        await using var server = await OwnServerAsync(engine);
        var mark = server.ErrorLogPosition;
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        // A second request is pipelined: it must not be answered on this broken connection.
        await connection.SendAsync([.. RawHttp.Get("/cl_short", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        // The status line, headers and the 5 bytes the app did send reach the client, then the connection ends.
        var response = await connection.ReadResponseAsync();
        Assert.Equal("10", response.Header("Content-Length"));
        Assert.Equal("12345", response.BodyLatin1);
        Assert.False(response.Complete, "only 5 of the 10 declared bytes exist: " + response);
        Assert.True(response.ConnectionClosed, "the connection must be closed after the short body");

        await Task.Delay(300);
        AssertNoDotNetStackTrace(server.ErrorLogSince(mark));
        await AssertStillServesAsync(server);
    }

    /// <summary>
    /// Content-Length 10 and no body at all: the client still gets the status line and headers, so
    /// it can tell a truncated response from a dead server, and then the close (as gunicorn does).
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Short_content_length_with_no_body_sends_the_head_then_closes(string engine)
    {
        await using var server = await OwnServerAsync(engine);
        var mark = server.ErrorLogPosition;
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/cl_short_empty", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.StatusCode);
        Assert.Equal("10", response.Header("Content-Length"));
        Assert.Empty(response.Body);
        Assert.False(response.Complete, response.ToString());
        Assert.True(response.ConnectionClosed, "the connection must be closed after the short body");

        await server.WaitForLogAsync("the application sent 0 of its Content-Length of 10 bytes", LogTimeout, mark);
        AssertNoDotNetStackTrace(server.ErrorLogSince(mark));
        await AssertStillServesAsync(server);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Request_pipelined_behind_a_short_body_causes_no_internal_error(string engine)
    {
        await using var server = await OwnServerAsync(engine);
        var mark = server.ErrorLogPosition;
        // The failure this guards against is timing-dependent: try a few connections.
        for (var i = 0; i < 3; i++)
        {
            using var connection = await RawHttpConnection.OpenAsync(server.Port);
            await connection.SendAsync([
                .. RawHttp.Get("/cl_short", server.Port), .. RawHttp.Get("/list1", server.Port), .. RawHttp.Get("/list3", server.Port),
            ]);
            await connection.ReadForAsync(TimeSpan.FromSeconds(10));
        }

        await server.WaitForLogAsync("/cl_short", LogTimeout, mark);
        // The pipelined request must be dropped quietly; a failure there shows up a little later, so watch for it.
        await AssertNoLogWithinAsync(server, "[ERROR]", TimeSpan.FromSeconds(2), mark);
        AssertNoDotNetStackTrace(server.ErrorLogSince(mark));
        await AssertStillServesAsync(server);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Long_body_is_truncated_to_content_length_and_the_connection_stays_in_sync(string engine)
    {
        await using var server = await OwnServerAsync(engine);
        var mark = server.ErrorLogPosition;
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/cl_long", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var response = await connection.ReadResponseAsync();
        Assert.Equal("5", response.Header("Content-Length"));
        Assert.Equal("12345", response.BodyLatin1);

        // As gunicorn: the excess is dropped, the framing stays right, so the pipelined request
        // is answered next on the same connection instead of "67890" garbage.
        var next = await connection.ReadResponseAsync();
        Assert.Equal(200, next.StatusCode);
        Assert.Equal("hello", next.BodyText);

        await Task.Delay(300);
        AssertNoDotNetStackTrace(server.ErrorLogSince(mark));
        await AssertStillServesAsync(server);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Head_sends_no_body_but_keeps_the_apps_content_length(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Request("HEAD", "/head", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var head = await connection.ReadResponseAsync(headRequest: true);
        Assert.Equal(200, head.StatusCode);
        Assert.Equal("11", head.Header("Content-Length"));
        // If body bytes had been sent, the next response would not start with a status line.
        var next = await connection.ReadResponseAsync();
        Assert.Equal(200, next.StatusCode);
        Assert.Equal("hello", next.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Head_of_a_generator_sends_no_body_and_no_chunks(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Request("HEAD", "/gen", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var head = await connection.ReadResponseAsync(headRequest: true);
        Assert.Equal(200, head.StatusCode);
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Status_204_has_no_body_and_no_framing_headers(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/204", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var noContent = await connection.ReadResponseAsync();
        Assert.Equal(204, noContent.StatusCode);
        Assert.False(noContent.HasHeader("Transfer-Encoding"), noContent.ToString());
        Assert.False(noContent.HasHeader("Content-Length"), noContent.ToString());
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    /// <summary>
    /// A 204 that the application gave a body and a Content-Length (Django's HttpResponse(status=204)
    /// does): neither goes out (RFC 9110 §8.6), and the connection goes on.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Status_204_drops_the_application_body_and_content_length(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/204_with_body", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var noContent = await connection.ReadResponseAsync();
        Assert.Equal(204, noContent.StatusCode);
        Assert.False(noContent.HasHeader("Content-Length"), noContent.ToString());
        Assert.False(noContent.HasHeader("Transfer-Encoding"), noContent.ToString());
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    /// <summary>205 Reset Content has no content (RFC 9110 §15.3.6): "Content-Length: 0", whatever the application returns.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Status_205_has_an_empty_body_whatever_the_application_returns(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/205_with_body", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var reset = await connection.ReadResponseAsync();
        Assert.Equal(205, reset.StatusCode);
        Assert.Equal("0", reset.Header("Content-Length"));
        Assert.Equal("", reset.BodyText);
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    /// <summary>An empty header value is valid (RFC 9110 §5.5) and goes out as "X-Empty: ", as gunicorn sends it.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_header_with_an_empty_value_is_sent(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/empty_header");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal([""], response.HeaderValues("X-Empty"));
        Assert.Equal("y", response.Header("X-After"));
        Assert.Equal("hello", response.BodyText);
    }

    /// <summary>
    /// Two Content-Length headers that differ would frame the response two ways: start_response
    /// refuses them (ValueError); the same value twice goes out once.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Conflicting_content_lengths_are_refused_and_a_repeated_one_sent_once(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/cl_conflict", server.Port), .. RawHttp.Get("/cl_twice_same", server.Port)]);

        var conflict = await connection.ReadResponseAsync();
        Assert.StartsWith("refused: conflicting Content-Length", conflict.BodyText);
        var twice = await connection.ReadResponseAsync();
        Assert.Equal(200, twice.StatusCode);
        Assert.Equal(["5"], twice.HeaderValues("Content-Length"));
        Assert.Equal("hello", twice.BodyText);
    }

    /// <summary>What write() sent counts against the Content-Length when a file_wrapper follows: never a byte past it.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task File_wrapper_after_write_stops_at_the_declared_length(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/write_then_filewrapper", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.StatusCode);
        byte[] expected = [.. "hello"u8, .. Enumerable.Range(0, 100).Select(i => (byte)i)];
        Assert.Equal(expected, response.Body);
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Status_304_has_no_body(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Get("/304", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var notModified = await connection.ReadResponseAsync();
        Assert.Equal(304, notModified.StatusCode);
        Assert.Equal("\"v1\"", notModified.Header("ETag"));
        Assert.False(notModified.HasHeader("Transfer-Encoding"), notModified.ToString());
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Requests_run_concurrently_with_several_threads(string engine)
    {
        var server = await ServerAsync(engine);
        var watch = Stopwatch.StartNew();
        // Three requests that each take 0.8 s in the app (--threads 4).
        var responses = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => RawHttp.GetAsync(server, "/slowgen?delay=0.8")));
        watch.Stop();

        Assert.All(responses, r => Assert.Equal("first;second", r.BodyText));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"3 x 0.8 s requests took {watch.Elapsed.TotalSeconds:F2} s: not run in parallel");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Keep_alive_serves_several_requests_on_one_connection(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);

        foreach (var (target, body) in new[] { ("/list1", "hello"), ("/list3", "abbccc"), ("/gen", "g1g2g3"), ("/list1", "hello") })
        {
            await connection.SendAsync(RawHttp.Get(target, server.Port));
            var response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal(body, response.BodyText);
            Assert.False(response.ConnectionClosed, $"connection closed after {target}");
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Pipelined_requests_are_answered_in_order(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([
            .. RawHttp.Get("/list3", server.Port),
            .. RawHttp.Get("/list1", server.Port),
            .. RawHttp.Get("/gen", server.Port),
        ]);

        Assert.Equal("abbccc", (await connection.ReadResponseAsync()).BodyText);
        Assert.Equal("hello", (await connection.ReadResponseAsync()).BodyText);
        Assert.Equal("g1g2g3", (await connection.ReadResponseAsync()).BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Close_is_called_when_the_response_completes(string engine)
    {
        var server = await ServerAsync(engine);
        var id = Guid.NewGuid().ToString("N");
        var response = await RawHttp.GetAsync(server, $"/close_tracker?id={id}&count=3&size=16");
        Assert.Equal(200, response.StatusCode);
        Assert.Equal(48, response.Body.Length);

        JsonElement state = default;
        var closed = await EventuallyAsync(async () =>
        {
            state = await CloseStatusAsync(server, id);
            return state.GetProperty("closed").GetBoolean();
        }, TimeSpan.FromSeconds(3));
        Assert.True(closed, $"close() was not called: {state}");
        Assert.True(state.GetProperty("finished").GetBoolean());
        Assert.Equal(3, state.GetProperty("yielded").GetInt32());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Close_is_called_when_the_client_disconnects_mid_stream(string engine)
    {
        await using var server = await OwnServerAsync(engine);
        var mark = server.ErrorLogPosition;
        var id = Guid.NewGuid().ToString("N");
        var connection = await RawHttpConnection.OpenAsync(server.Port);
        // 2000 chunks of 16 KiB, 10 ms apart: about 20 s unless the server stops early.
        await connection.SendAsync(RawHttp.Get($"/close_tracker?id={id}&count=2000&size=16384&delay=0.01", server.Port));
        await connection.WaitForBytesAsync("1:....", TimeSpan.FromSeconds(5));
        connection.Abort();
        connection.Dispose();

        JsonElement state = default;
        var closed = await EventuallyAsync(async () =>
        {
            state = await CloseStatusAsync(server, id);
            return state.GetProperty("closed").GetBoolean();
        }, TimeSpan.FromSeconds(6));
        Assert.True(closed, $"close() was not called within 6 s of the client going away: {state}");
        Assert.False(state.GetProperty("finished").GetBoolean(), "the iterable was run to its end");

        // A client going away is routine: no internal error, no .NET stack trace.
        await Task.Delay(300);
        var log = server.ErrorLogSince(mark);
        AssertNoDotNetStackTrace(log);
        Assert.DoesNotContain("internal error", log, StringComparison.OrdinalIgnoreCase);
    }

    private static async Task<JsonElement> CloseStatusAsync(OspreyServer server, string id)
    {
        var response = await RawHttp.GetAsync(server, $"/close_status?id={id}");
        Assert.Equal(200, response.StatusCode);
        var json = response.Json();
        Assert.True(json.TryGetProperty("closed", out _), $"unknown tracker id: {response.BodyText}");
        return json;
    }
}
