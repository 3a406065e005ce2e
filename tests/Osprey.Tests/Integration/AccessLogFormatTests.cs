using System.Text;
using Osprey.Tests.Infrastructure;
using Osprey.Wsgi;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>--access-logformat: gunicorn's atoms, each one checked, and the format in a real server's log.</summary>
public sealed class AccessLogFormatTests
{
    private static string Format(string format, Action<RequestHead>? request = null, int status = 200, long bytes = 1234,
        TimeSpan? elapsed = null)
    {
        var parsed = AccessLogFormat.Parse(format, out var error);
        Assert.True(parsed is not null, error);
        var head = new RequestHead { Method = "POST", RemoteAddress = "192.0.2.9", Version = Osprey.Wsgi.HttpVersion.Http11 };
        head.SetTarget("/shop/cart?item=7&x=%20");
        head.AddHeader("Host", "example.com");
        head.AddHeader("Referer", "https://example.com/");
        head.AddHeader("User-Agent", "curl/8");
        head.AddHeader("X-Request-Id", "abc-123");
        request?.Invoke(head);
        var response = new ResponseHead();
        response.SetStatus(status, "OK"u8);
        response.AddHeader("Content-Type"u8, "text/html"u8);
        var line = new StringBuilder();
        parsed.Append(line, new AccessLogEntry(head, response, status, bytes, elapsed ?? TimeSpan.FromMicroseconds(2_345_678),
            new DateTimeOffset(2026, 11, 30, 20, 5, 1, TimeSpan.FromHours(1))));
        return line.ToString();
    }

    [Fact]
    public void The_default_is_gunicorns_combined_format()
    {
        Assert.Equal("192.0.2.9 - - [30/Nov/2026:20:05:01 +0100] \"POST /shop/cart?item=7&x=%20 HTTP/1.1\" 200 1234 \"https://example.com/\" \"curl/8\"",
            Format(AccessLogFormat.GunicornDefault));
    }

    [Theory]
    [InlineData("%(h)s", "192.0.2.9")]
    [InlineData("%(l)s", "-")]
    [InlineData("%(u)s", "-")]
    [InlineData("%(m)s", "POST")]
    [InlineData("%(U)s", "/shop/cart")]
    [InlineData("%(q)s", "item=7&x=%20")]
    [InlineData("%(H)s", "HTTP/1.1")]
    [InlineData("%(s)s", "200")]
    [InlineData("%(B)s", "1234")]
    [InlineData("%(b)s", "1234")]
    [InlineData("%(f)s", "https://example.com/")]
    [InlineData("%(a)s", "curl/8")]
    [InlineData("%(T)s", "2")]
    [InlineData("%(M)s", "2345")]
    [InlineData("%(D)s", "2345678")]
    [InlineData("%(L)s", "2.345678")]
    [InlineData("%({x-request-id}i)s", "abc-123")]
    [InlineData("%({X-REQUEST-ID}i)s", "abc-123")]
    [InlineData("%({x-missing}i)s", "-")]
    [InlineData("%({content-type}o)s", "text/html")]
    [InlineData("%({nope}o)s", "-")]
    [InlineData("%(not_an_atom)s", "-")]
    [InlineData("100%% %(s)s", "100% 200")]
    [InlineData("[%(s)5s|%(s)-5s]", "[  200|200  ]")]
    [InlineData("%(D)d", "2345678")]
    public void Each_atom_is_what_gunicorn_writes(string format, string expected)
    {
        Assert.Equal(expected, Format(format));
    }

    [Fact]
    public void Atoms_that_depend_on_the_request()
    {
        Assert.Equal("-", Format("%(b)s", bytes: 0));
        Assert.Equal("0", Format("%(B)s", bytes: 0));
        Assert.Equal("alice", Format("%(u)s", r => r.AddHeader("Authorization", "Basic " + Convert.ToBase64String("alice:secret"u8))));
        Assert.Equal("-", Format("%(u)s", r => r.AddHeader("Authorization", "Bearer token")));
        Assert.Equal($"<{Environment.ProcessId}>", Format("%(p)s"));
        Assert.Equal(Environment.GetEnvironmentVariable("PATH"), Format("%({PATH}e)s"));
    }

    [Theory]
    [InlineData("%h", "is not followed by (NAME)")]
    [InlineData("%(h", "has no closing ')'")]
    [InlineData("%(h)", "needs a conversion")]
    [InlineData("%(h)x", "needs a conversion")]
    public void A_format_python_would_refuse_is_one_clear_line(string format, string words)
    {
        Assert.Null(AccessLogFormat.Parse(format, out var error));
        Assert.Contains(words, error, StringComparison.Ordinal);
        var outcome = Assert.IsType<Osprey.Cli.ParseOutcome.Error>(Osprey.Cli.CommandLine.Parse(["--access-logformat", format, "app"]));
        Assert.StartsWith("--access-logformat: ", outcome.Message, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task The_server_logs_each_request_in_the_given_format(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, "response_app:app", "--access-logfile", "-",
            "--access-logformat", "%(h)s|%(m)s|%(U)s|%(q)s|%(s)s|%(B)s|%({x-request-id}i)s|%({content-type}o)s|%(D)s|%(p)s|%(H)s");

        var response = await RawHttp.GetAsync(server, "/list3?a=b", "X-Request-Id: r-42");
        Assert.Equal(200, response.StatusCode);

        Assert.True(await EventuallyAsync(() => Task.FromResult(server.Stdout.Contains("|/list3|", StringComparison.Ordinal)), TimeSpan.FromSeconds(10)),
            $"no access log line: {server.Stdout}");
        var fields = server.Stdout.Split('\n').Single(l => l.Contains("|/list3|", StringComparison.Ordinal)).Split('|');
        Assert.Equal(["127.0.0.1", "GET", "/list3", "a=b", "200", response.Body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), "r-42"], fields[..7]);
        Assert.Equal(response.Headers.First(h => h.Key.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)).Value, fields[7]);
        Assert.True(long.Parse(fields[8], System.Globalization.CultureInfo.InvariantCulture) > 0, fields[8]);
        Assert.Matches(@"^<\d+>$", fields[9]);
        Assert.Equal("HTTP/1.1", fields[10]);
    }
}
