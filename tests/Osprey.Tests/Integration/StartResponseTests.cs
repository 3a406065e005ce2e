using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>start_response: validation of status and headers, exc_info before/after headers are sent, the write() callable (response_app.py).</summary>
public sealed class StartResponseTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private Task<OspreyServer> ServerAsync(string engine) => pool.GetAsync(engine, "response_app:app", "--threads", "4");

    /// <summary>The app calls start_response with something invalid, catches what it raises and reports the type.</summary>
    private async Task<RawHttpResponse> AssertStartResponseRaisesAsync(string engine, string target)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, target);
        Assert.True(response.StatusCode == 200, response.ToString());
        Assert.StartsWith("caught:", response.BodyText, StringComparison.Ordinal);
        Assert.True(response.BodyText != "caught:none", $"start_response accepted it: {response}");
        return response;
    }

    /// <summary>
    /// exc_info that is no exception, (None, None, None) as sys.exc_info() gives outside an except
    /// block, after the head went out: a TypeError the application can catch, in the same worker.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Exc_info_that_is_not_an_exception_raises_type_error(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/exc_info_not_an_exception");
        Assert.True(response.StatusCode == 200, response.ToString());
        string[] parts = response.BodyText.Split(';');
        Assert.Equal("TypeError", parts[1]);
        var again = await RawHttp.GetAsync(server, "/exc_info_not_an_exception");
        Assert.Equal(parts[0], again.BodyText.Split(';')[0]);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_value_with_crlf_is_rejected(string engine)
    {
        var response = await AssertStartResponseRaisesAsync(engine, "/bad_header_crlf");
        Assert.False(response.HasHeader("Injected"), response.ToString());
        Assert.False(response.HasHeader("X-Bad"), response.ToString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_value_with_bare_lf_is_rejected(string engine)
    {
        var response = await AssertStartResponseRaisesAsync(engine, "/bad_header_lf");
        Assert.False(response.HasHeader("Injected"), response.ToString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_name_with_colon_is_rejected(string engine)
    {
        var response = await AssertStartResponseRaisesAsync(engine, "/bad_header_name");
        Assert.False(response.HasHeader("X-Bad"), response.ToString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Hop_by_hop_header_is_rejected(string engine)
    {
        await AssertStartResponseRaisesAsync(engine, "/bad_header_hop");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Status_without_reason_phrase_is_rejected(string engine)
    {
        await AssertStartResponseRaisesAsync(engine, "/bad_status?s=200");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Non_numeric_status_is_rejected(string engine)
    {
        await AssertStartResponseRaisesAsync(engine, "/bad_status?s=abc");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_value_outside_latin1_is_rejected(string engine)
    {
        var response = await AssertStartResponseRaisesAsync(engine, "/non_latin1_header");
        Assert.False(response.HasHeader("X-Euro"), response.ToString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Bytes_header_value_is_rejected(string engine)
    {
        var response = await AssertStartResponseRaisesAsync(engine, "/bytes_header");
        Assert.False(response.HasHeader("X-Bytes"), response.ToString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Second_start_response_without_exc_info_is_an_error(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/double_start");

        // The first call stands (200, not 201); the second raised.
        Assert.True(response.StatusCode == 200, response.ToString());
        Assert.StartsWith("caught:", response.BodyText, StringComparison.Ordinal);
        Assert.NotEqual("caught:none", response.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Exc_info_before_headers_are_sent_replaces_the_response(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/exc_info_before");

        Assert.Equal(500, response.StatusCode);
        Assert.Equal("exc_info", response.Header("X-Handled"));
        Assert.False(response.HasHeader("X-First"), "headers of the replaced start_response call leaked: " + response);
        Assert.Equal("handled error", response.BodyText);
        Assert.True(response.Complete);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Exc_info_after_headers_are_sent_reraises_and_aborts_the_connection(string engine)
    {
        var server = await ServerAsync(engine);
        var mark = server.ErrorLogPosition;
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/exc_info_after", server.Port));
        var response = await connection.ReadResponseAsync();

        // The 200 and the first chunk were already on the wire; the re-raised error can only cut the response short.
        Assert.Equal(200, response.StatusCode);
        Assert.StartsWith("first chunk;", response.BodyText, StringComparison.Ordinal);
        Assert.DoesNotContain("must not be sent", response.BodyText, StringComparison.Ordinal);
        Assert.False(response.Complete, "the response must not look complete: " + response);
        Assert.True(response.ConnectionClosed, "the connection must be closed");

        var log = await server.WaitForLogAsync("exc_info_after marker", LogTimeout, mark);
        Assert.Contains("ValueError", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertStillServesAsync(server);
    }

    /// <summary>
    /// The worker reuses the C# side of start_response, write and wsgi.input once Python frees them;
    /// objects the application kept must not be reused, and go on refusing calls in later requests.
    /// One Python thread, so that the later requests run on the worker that made the kept objects.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Objects_kept_from_an_earlier_request_refuse_calls(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "1");
        var kept = await RawHttp.GetAsync(server, "/keep");
        Assert.True(kept.StatusCode == 200 && kept.BodyText == "kept", kept.ToString());

        for (int round = 0; round < 3; round++)
        {
            // Requests in between cycle fresh objects through the worker.
            var plain = await RawHttp.GetAsync(server, "/list3");
            Assert.True(plain.StatusCode == 200 && plain.BodyText == "abbccc", plain.ToString());

            var used = await RawHttp.GetAsync(server, "/use_kept");
            Assert.True(used.StatusCode == 200, used.ToString());
            Assert.Equal("start_response:RuntimeError;write:RuntimeError;input:RuntimeError", used.BodyText);
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Write_callable_sends_the_body(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/write");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("11", response.Header("Content-Length"));
        Assert.Equal("hello world", response.BodyText);
        Assert.True(response.Complete);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Write_callable_output_comes_before_the_returned_iterable(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/write_mixed");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("written;returned", response.BodyText);
        Assert.True(response.Complete);
    }
}
