using System.Net;
using System.Net.Http;
using System.Net.Security;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Integration;

namespace Osprey.Tests.Http;

/// <summary>
/// An HTTP/2 client can stop taking a response without any TCP back-pressure: it just never opens
/// its stream's flow-control window, and Kestrel does not count that against its minimum response
/// rate. Such a stream is reset after about 5 s, as the README promises for a slow reader, so it
/// holds a Python thread for seconds, not forever; the response's iterable is closed and the
/// connection's other streams go on.
/// </summary>
public sealed class Http2SlowClientTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-h2slow-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static HttpClient NewClient(TimeSpan timeout) => new(new SocketsHttpHandler
    {
        SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
    })
    {
        DefaultRequestVersion = HttpVersion.Version20,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        Timeout = timeout,
    };

    [Theory]
    [InlineData("/big")]
    [InlineData("/file")]
    public async Task A_stream_whose_window_is_never_opened_is_reset_and_frees_the_thread(string target)
    {
        var (cert, keyFile) = TlsTests.WriteSelfSigned(_dir, "CN=osprey-h2slow");
        // One thread and no --timeout: only the slow-reader rule can free the thread.
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "slow_reader_app:app",
            Args = ["--certfile", cert, "--keyfile", keyFile, "--threads", "1", "--timeout", "0"],
        });
        var origin = new Uri($"https://127.0.0.1:{server.Port}");

        // Response headers, then nothing read: HttpClient sends no WINDOW_UPDATE for unread data,
        // so the 8 MB response stops at the initial 64 KB window.
        using var stalled = NewClient(TimeSpan.FromSeconds(60));
        using var response = await stalled.GetAsync(new Uri(origin, target), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        var started = DateTime.UtcNow;

        string? answer = null;
        while (answer is null && DateTime.UtcNow - started < TimeSpan.FromSeconds(15))
        {
            using var probe = NewClient(TimeSpan.FromSeconds(3));
            try
            {
                answer = await probe.GetStringAsync(origin);
            }
            catch (Exception e) when (e is TaskCanceledException or HttpRequestException)
            {
                await Task.Delay(500);
            }
        }
        Assert.True(answer is not null, $"the only Python thread was still held {(DateTime.UtcNow - started).TotalSeconds:F0} s after the client stalled");
        Assert.Equal("closed 1", answer);
        Assert.Matches(@"\[WARNING\] .*GET " + target + @": the client read the response slower than 240 bytes/s; HTTP/2 stream reset", server.ErrorLog);

        // Only the stream was reset: the stalled client's connection still serves a new stream.
        Assert.Equal("closed 1", await stalled.GetStringAsync(origin));
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var body = await response.Content.ReadAsStreamAsync();
            await body.CopyToAsync(Stream.Null);
        });
    }
}
