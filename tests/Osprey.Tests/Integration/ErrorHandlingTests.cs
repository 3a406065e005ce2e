using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>
/// Application errors: an exception before headers gives a 500 and a traceback in the log, one after headers
/// aborts the connection, a wrong return value gives a 500 and one clear log line; the server goes on serving.
/// </summary>
public sealed class ErrorHandlingTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private Task<OspreyServer> ServerAsync(string engine) => pool.GetAsync(engine, "response_app:app", "--threads", "4");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Exception_before_start_response_gives_500_and_a_traceback(string engine)
    {
        var server = await ServerAsync(engine);
        var mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/raise");

        Assert.Equal(500, response.StatusCode);
        Assert.True(response.Complete, response.ToString());
        Assert.DoesNotContain("raise marker", response.BodyText, StringComparison.Ordinal); // no traceback to the client

        var log = await server.WaitForLogAsync("RuntimeError: raise marker: before start_response", LogTimeout, mark);
        Assert.Contains("Traceback (most recent call last):", log, StringComparison.Ordinal);
        Assert.Contains("response_app.py", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertStillServesAsync(server);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Exception_after_headers_aborts_the_connection(string engine)
    {
        var server = await ServerAsync(engine);
        var mark = server.ErrorLogPosition;
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/raise_after_headers", server.Port));
        var response = await connection.ReadResponseAsync();

        Assert.Equal(200, response.StatusCode);
        Assert.StartsWith("partial;", response.BodyText, StringComparison.Ordinal);
        Assert.False(response.Complete, "an aborted response must not look complete (no last chunk): " + response);
        Assert.True(response.ConnectionClosed);

        var log = await server.WaitForLogAsync("RuntimeError: raise_after_headers marker", LogTimeout, mark);
        Assert.Contains("Traceback (most recent call last):", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertStillServesAsync(server);
    }

    /// <summary>
    /// The traceback is logged even when the exception's str() cannot be turned into log text: a lone surrogate in
    /// the message (escaped in the log), or a __str__ that raises. The client gets the 500 either way.
    /// </summary>
    [Theory]
    [MemberData(nameof(TracebackCases))]
    public async Task Traceback_is_logged_when_the_exception_message_cannot_be_converted(string engine, string target)
    {
        var server = await ServerAsync(engine);
        var mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, target);
        Assert.Equal(500, response.StatusCode);

        var (exceptionLine, raisingLine) = target switch
        {
            "/raise_surrogate" => (@"ValueError: bad name \udcff here", @"raise ValueError('bad name \udcff here')"),
            "/raise_badstr" => ("_BadStrError", "raise _BadStrError('raise_badstr marker')"),
            _ => ("KeyError: 'iter_raises marker'", "raise KeyError('iter_raises marker')"),
        };
        var log = await server.WaitForLogAsync(exceptionLine, LogTimeout, mark);
        await server.WaitForLogAsync(raisingLine, LogTimeout, mark);
        log = server.ErrorLogSince(mark);
        Assert.Contains($"Error handling request GET {target}", log, StringComparison.Ordinal);
        Assert.Contains("Traceback (most recent call last):", log, StringComparison.Ordinal);
        Assert.Contains("response_app.py", log, StringComparison.Ordinal);
        Assert.DoesNotContain("not an iterable", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertStillServesAsync(server);
    }

    public static TheoryData<string, string> TracebackCases => Engines.Cross(["/raise_surrogate", "/raise_badstr", "/iter_raises"]);

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task List_of_str_gives_500_and_one_log_line(string engine) => await AssertBadReturnValueAsync(engine, "/str_body");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Bare_str_gives_500_and_one_log_line(string engine) => await AssertBadReturnValueAsync(engine, "/bare_str_body");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task None_gives_500_and_one_log_line(string engine) => await AssertBadReturnValueAsync(engine, "/none_body");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Int_gives_500_and_one_log_line(string engine) => await AssertBadReturnValueAsync(engine, "/int_body");

    private async Task AssertBadReturnValueAsync(string engine, string target)
    {
        var server = await ServerAsync(engine);
        var mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, target);

        Assert.Equal(500, response.StatusCode);
        Assert.True(response.Complete, response.ToString());

        await server.WaitForLogAsync("[ERROR]", LogTimeout, mark);
        await Task.Delay(200); // let any further lines of the same report arrive
        var log = server.ErrorLogSince(mark);
        var errors = LogLines(log, "ERROR");
        Assert.True(errors.Count == 1, $"expected exactly one [ERROR] line for {target}, log:\n{log}");
        Assert.DoesNotContain("Traceback", log, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(log);
        await AssertStillServesAsync(server);
    }
}
