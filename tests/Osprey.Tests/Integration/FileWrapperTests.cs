using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>wsgi.file_wrapper over a real file (with and without Content-Length) and over io.BytesIO (response_app.py).</summary>
public sealed class FileWrapperTests(ServerPool pool) : IClassFixture<ServerPool>
{
    /// <summary>What response_app writes to its temp file: every byte value 1200 times, then "end".</summary>
    private static readonly byte[] FileContent =
        [.. Enumerable.Repeat(Enumerable.Range(0, 256).Select(i => (byte)i), 1200).SelectMany(b => b), .. "end"u8.ToArray()];

    private Task<OspreyServer> ServerAsync(string engine) => pool.GetAsync(engine, "response_app:app", "--threads", "4");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Real_file_with_content_length_is_sent_exactly(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/filewrapper");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal(FileContent.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), response.Header("Content-Length"));
        Assert.Equal(BodyFraming.ContentLength, response.Framing);
        Assert.True(response.Complete);
        Assert.Equal(FileContent, response.Body);
        await AssertStillServesAsync(server);
    }

    [Fact]
    public async Task Lean_engine_sends_a_real_file_with_sendfile()
    {
        // Kestrel has no sendfile path (it copies through its pipe); the lean engine hands the
        // file descriptor to the kernel, and says so in the debug log.
        var server = await pool.GetAsync("osprey", "response_app:app", "--log-level", "debug");
        int position = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/filewrapper");

        Assert.Equal(FileContent, response.Body);
        string log = await server.WaitForLogAsync("sendfile: ", TimeSpan.FromSeconds(5), position);
        Assert.Contains($"sendfile: {FileContent.Length} bytes", log, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Real_file_without_content_length_is_sent_exactly(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/filewrapper_nocl");

        Assert.Equal(200, response.StatusCode);
        Assert.True(response.Complete, response.ToString());
        Assert.Equal(FileContent, response.Body);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Bytesio_is_read_through_and_closed(string engine)
    {
        var server = await ServerAsync(engine);
        var id = Guid.NewGuid().ToString("N");
        var response = await RawHttp.GetAsync(server, $"/filewrapper_bytesio?id={id}");

        Assert.Equal(200, response.StatusCode);
        Assert.True(response.Complete, response.ToString());
        Assert.Equal(FileContent, response.Body);

        // PEP 3333: the wrapper's close() closes the file-like object.
        JsonElement state = default;
        var closed = await EventuallyAsync(async () =>
        {
            state = (await RawHttp.GetAsync(server, $"/close_status?id={id}")).Json();
            return state.TryGetProperty("closed", out var c) && c.GetBoolean();
        }, TimeSpan.FromSeconds(3));
        Assert.True(closed, $"the BytesIO was not closed: {state}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Head_of_a_file_sends_no_body(string engine)
    {
        var server = await ServerAsync(engine);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync([.. RawHttp.Request("HEAD", "/filewrapper", server.Port), .. RawHttp.Get("/list1", server.Port)]);

        var head = await connection.ReadResponseAsync(headRequest: true);
        Assert.Equal(200, head.StatusCode);
        Assert.Equal(FileContent.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), head.Header("Content-Length"));
        var next = await connection.ReadResponseAsync();
        Assert.Equal("hello", next.BodyText);
    }
}
