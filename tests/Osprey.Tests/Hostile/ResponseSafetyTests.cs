using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Hostile.HostileSupport;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Hostile;

/// <summary>
/// The application cannot split a response (CR, LF or NUL in its status or a header value gives a
/// 500 and a logged traceback), and clients that vanish mid-upload or mid-download leave nothing
/// behind: the iterable's close() runs and the next request is served.
/// </summary>
public sealed class ResponseSafetyTests(ServerPool pool) : IClassFixture<ServerPool>
{
    public static TheoryData<string, string> SplittingRoutes => Engines.Cross(["/status_crlf", "/status_lf", "/header_crlf", "/header_nul"]);

    [Theory, MemberData(nameof(SplittingRoutes))]
    public async Task Control_characters_from_the_app_give_500_and_a_logged_error(string engine, string route)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        int mark = server.ErrorLogPosition;
        RawHttpResponse response = await RawHttp.GetAsync(server, route);
        Assert.True(response.StatusCode == 500, response.ToString());
        Assert.False(response.HasHeader("X-Injected"), response.ToString());
        Assert.DoesNotContain("should not be sent", response.BodyText, StringComparison.Ordinal);
        string log = await server.WaitForLogAsync("ValueError", LogTimeout, mark);
        Assert.Contains("control character", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertServesAsync(server);
    }

    /// <summary>
    /// A streamed upload (Expect: 100-continue) abandoned half-way: the application's reads end,
    /// its iterable's close() runs, and the server serves the next client.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Client_vanishing_mid_upload_gets_close_called_and_the_server_serves_on(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string id = Guid.NewGuid().ToString("N");
        var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync($"POST /upload?id={id} HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n");
        var (interim, _) = (await connection.ReadResponseAsync(), 0);
        Assert.Equal(100, interim.StatusCode);
        await connection.SendAsync(new byte[200_000]);
        await connection.WaitForBytesAsync("\n", TimeSpan.FromSeconds(10));
        connection.Abort();
        connection.Dispose();

        await AssertClosedEventuallyAsync(server, id);
        await AssertServesAsync(server);
    }

    /// <summary>A download abandoned half-way (the client resets): close() runs, the server serves on.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Client_vanishing_mid_download_gets_close_called_and_the_server_serves_on(string engine)
    {
        OspreyServer server = await pool.GetAsync(engine, App);
        string id = Guid.NewGuid().ToString("N");
        var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get($"/big?size={32 << 20}&id={id}", server.Port));
        await connection.WaitForBytesAsync("xxxx", TimeSpan.FromSeconds(10));
        connection.Abort();
        connection.Dispose();

        JsonElement state = await AssertClosedEventuallyAsync(server, id);
        Assert.True(state.GetProperty("yielded").GetInt32() < 512, $"the whole iterable ran for a client that was gone: {state}");
        await AssertServesAsync(server);
    }

    private static async Task<JsonElement> AssertClosedEventuallyAsync(OspreyServer server, string id)
    {
        JsonElement state = default;
        bool closed = await EventuallyAsync(async () =>
        {
            state = (await RawHttp.GetAsync(server, $"/closed?id={id}")).Json();
            return state.TryGetProperty("closed", out JsonElement value) && value.GetBoolean();
        }, TimeSpan.FromSeconds(15));
        Assert.True(closed, $"close() was not called: {state}");
        return state;
    }
}
