using System.Net;
using System.Net.Sockets;
using System.Text;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Integration;

/// <summary>gunicorn's StatsD metrics (--statsd-host, --statsd-prefix, --dogstatsd-tags), received by a UDP socket here.</summary>
public sealed class StatsdTests
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(20);

    private static async Task<List<string>> ReceiveUntilAsync(UdpClient collector, List<string> lines, Func<List<string>, bool> done)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (!done(lines))
        {
            var remaining = deadline - DateTime.UtcNow;
            Assert.True(remaining > TimeSpan.Zero, "metrics received:\n" + string.Join("\n", lines));
            using var timeout = new CancellationTokenSource(remaining);
            try
            {
                UdpReceiveResult datagram = await collector.ReceiveAsync(timeout.Token);
                lines.AddRange(Encoding.ASCII.GetString(datagram.Buffer).Split('\n'));
            }
            catch (OperationCanceledException)
            {
            }
        }
        return lines;
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Requests_statuses_durations_workers_and_errors_are_sent_with_gunicorns_names(string engine)
    {
        using var collector = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)collector.Client.LocalEndPoint!).Port;
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            Engine = engine, App = "response_app:app",
            Args = ["--statsd-host", $"127.0.0.1:{port}", "--statsd-prefix", "shop", "--dogstatsd-tags", "env:test,team:web"],
        });

        Assert.Equal(200, (await RawHttp.GetAsync(server, "/list1")).StatusCode);
        Assert.Equal(204, (await RawHttp.GetAsync(server, "/204")).StatusCode);
        Assert.Equal(500, (await RawHttp.GetAsync(server, "/raise")).StatusCode);

        const string Tags = "|#env:test,team:web";
        var lines = await ReceiveUntilAsync(collector, [], seen =>
            seen.Count(l => l == "shop.gunicorn.requests:1|c|@1.0" + Tags) >= 3
            && seen.Contains("shop.gunicorn.workers:1|g" + Tags)
            && seen.Contains("shop.gunicorn.log.error:1|c|@1.0" + Tags));

        Assert.Contains("shop.gunicorn.request.status.200:1|c|@1.0" + Tags, lines);
        Assert.Contains("shop.gunicorn.request.status.204:1|c|@1.0" + Tags, lines);
        Assert.Contains("shop.gunicorn.request.status.500:1|c|@1.0" + Tags, lines);
        var durations = lines.Where(l => l.StartsWith("shop.gunicorn.request.duration:", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, durations.Count);
        Assert.All(durations, d => Assert.EndsWith("|ms" + Tags, d, StringComparison.Ordinal));
        Assert.All(durations, d => Assert.True(double.Parse(d["shop.gunicorn.request.duration:".Length..d.IndexOf('|')], System.Globalization.CultureInfo.InvariantCulture) >= 0));
    }

    [Theory]
    [InlineData("localhost", "is not HOST:PORT or unix:PATH")]
    [InlineData("127.0.0.1:0", "is not HOST:PORT or unix:PATH")]
    [InlineData("unix:", "names no socket path")]
    public async Task A_bad_statsd_address_is_one_line(string address, string words)
    {
        var result = await OspreyServer.RunToCompletionAsync(
            ["--statsd-host", address, "--python", RepoPaths.SystemPython, "config_app:app"], TimeSpan.FromSeconds(30));

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"osprey: error: --statsd-host: '{address}' {words}", result.Stderr, StringComparison.Ordinal);
        TestSupport.AssertNoDotNetStackTrace(result.Stderr);
    }
}
