using System.Text;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Hostile;

/// <summary>Helpers shared by the hostile-client tests (app: tests/apps/hostile_app.py).</summary>
internal static class HostileSupport
{
    public const string App = "hostile_app:app";

    /// <summary>Sends raw bytes on a fresh connection and reads one response; null when the server closed without answering.</summary>
    public static async Task<(RawHttpResponse? Response, RawHttpConnection Connection)> ExchangeAsync(int port, string latin1)
    {
        var connection = await RawHttpConnection.OpenAsync(port);
        await connection.SendAsync(Encoding.Latin1.GetBytes(latin1));
        try
        {
            return (await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(20)), connection);
        }
        catch (ConnectionClosedByServerException)
        {
            return (null, connection);
        }
    }

    /// <summary>The server closes the connection (after whatever response it sent) within a generous time.</summary>
    public static async Task AssertClosedAsync(RawHttpConnection connection, string what)
    {
        try
        {
            await connection.ReadToCloseAsync(TimeSpan.FromSeconds(20));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"{what}: the server kept the connection open");
        }
    }

    /// <summary>Targets the app has served whose query contains <paramref name="marker"/>.</summary>
    public static async Task<List<string>> SeenAsync(OspreyServer server, string marker)
    {
        var response = await RawHttp.GetAsync(server, "/seen?marker=" + marker);
        Assert.Equal(200, response.StatusCode);
        return [.. response.Json().GetProperty("hits").EnumerateArray().Select(e => e.GetString()!)];
    }

    public static async Task AssertServesAsync(OspreyServer server)
    {
        var response = await RawHttp.GetAsync(server, "/alive");
        Assert.Equal(200, response.StatusCode);
        Assert.Equal("ok GET /alive", response.BodyText);
    }
}
