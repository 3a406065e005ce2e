using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>print(), sys.stderr and wsgi.errors output of the app end up in the error log (stderr).</summary>
public sealed class OutputCaptureTests(ServerPool pool) : IClassFixture<ServerPool>
{
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Print_stderr_and_wsgi_errors_appear_in_the_error_log(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        var marker = Guid.NewGuid().ToString("N");
        var response = await RawHttp.GetAsync(server, $"/print?m={marker}");
        Assert.Equal("printed", response.BodyText);

        await server.WaitForLogAsync("errors-" + marker, LogTimeout);
        await server.WaitForLogAsync("stderr-" + marker, LogTimeout);
        // print() goes to sys.stdout, which must also reach the error log (without an explicit flush).
        await server.WaitForLogAsync("stdout-" + marker, LogTimeout);
    }

    /// <summary>Text with lone surrogates (a file name that was not UTF-8) is logged with backslash escapes, as the streams' errors attribute says, not raised.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Text_that_is_not_valid_utf8_is_logged_escaped(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        var response = await RawHttp.GetAsync(server, "/print_surrogate");
        Assert.True(response.BodyText == "printed", response.ToString());
        await server.WaitForLogAsync(@"listing \udcff.txt", LogTimeout);
        await server.WaitForLogAsync(@"and \udcfe", LogTimeout);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Listening_line_is_logged_in_gunicorn_format(string engine)
    {
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "4");
        var log = await server.WaitForLogAsync($"Listening at: http://127.0.0.1:{server.Port}", LogTimeout);

        var line = log.Split('\n').Single(l => l.Contains("Listening at:", StringComparison.Ordinal));
        Assert.Matches(LogLineRegex(), line);
        Assert.Contains("[INFO]", line, StringComparison.Ordinal);
        Assert.EndsWith($"Listening at: http://127.0.0.1:{server.Port} ({server.ProcessId})", line, StringComparison.Ordinal);
    }
}
