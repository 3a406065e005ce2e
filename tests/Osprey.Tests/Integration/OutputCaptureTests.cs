using System.Text.Json;
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

    /// <summary>
    /// sys.stdout and sys.stderr are text streams, as in gunicorn's workers (io.TextIOWrapper): textstream_app reconfigures
    /// both at import (line_buffering, encoding), which must not stop it loading, and reads the usual attributes.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Stdout_and_stderr_are_text_streams_an_application_can_reconfigure(string engine)
    {
        var server = await pool.GetAsync(engine, "textstream_app:app", "--threads", "4");
        var response = await RawHttp.GetAsync(server, "/streams");
        Assert.True(response.StatusCode == 200, response.ToString());
        using var streams = JsonDocument.Parse(response.BodyText);
        foreach (var (name, fd) in new[] { ("stdout", 1), ("stderr", 2) })
        {
            JsonElement stream = streams.RootElement.GetProperty(name);
            Assert.Equal("TextIOWrapper", stream.GetProperty("type").GetString());
            Assert.Equal($"<{name}>", stream.GetProperty("name").GetString());
            Assert.Equal("utf-8", stream.GetProperty("encoding").GetString());
            Assert.Equal(fd, stream.GetProperty("fileno").GetInt32());
            Assert.Equal(fd, stream.GetProperty("buffer_fileno").GetInt32());
            Assert.False(stream.GetProperty("isatty").GetBoolean());
            Assert.False(stream.GetProperty("seekable").GetBoolean());
            Assert.True(stream.GetProperty("writable").GetBoolean());
            Assert.False(stream.GetProperty("readable").GetBoolean());
            Assert.False(stream.GetProperty("closed").GetBoolean());
            Assert.True(stream.GetProperty("has_enter").GetBoolean());
            Assert.True(stream.GetProperty("buffer_writable").GetBoolean());
        }
        Assert.True(streams.RootElement.GetProperty("stdout").GetProperty("line_buffering").GetBoolean());
        Assert.Equal("backslashreplace", streams.RootElement.GetProperty("stdout").GetProperty("errors").GetString());
        // reconfigure(encoding=...) without errors means strict, as for any TextIOWrapper.
        Assert.Equal("strict", streams.RootElement.GetProperty("stderr").GetProperty("errors").GetString());
    }

    /// <summary>Bytes written to sys.stdout.buffer / sys.stderr.buffer (bytes, bytearray, memoryview) reach the error log as they are.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Bytes_written_to_the_buffer_of_stdout_and_stderr_reach_the_error_log(string engine)
    {
        var server = await pool.GetAsync(engine, "textstream_app:app", "--threads", "4");
        var marker = Guid.NewGuid().ToString("N");
        int mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/buffer?" + marker);
        Assert.True(response.BodyText == $"written {("stdout-buffer-" + marker + "\n").Length}", response.ToString());

        string log = await server.WaitForLogAsync("memoryview-" + marker, LogTimeout, mark);
        Assert.Contains($"\nstdout-buffer-{marker}\n", "\n" + log, StringComparison.Ordinal);
        Assert.Contains($"\nstderr-buffer-{marker}\n", "\n" + log, StringComparison.Ordinal);
        Assert.Contains($"\nmemoryview-{marker}\n", "\n" + log, StringComparison.Ordinal);
    }

    /// <summary>Text through the reconfigured streams, print(flush=True) and logging's default handler: each line whole in the log.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Text_written_to_reconfigured_streams_reaches_the_error_log(string engine)
    {
        var server = await pool.GetAsync(engine, "textstream_app:app", "--threads", "4");
        var marker = Guid.NewGuid().ToString("N");
        int mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/text?" + marker);
        // write() returns the number of characters written, as a text stream's does.
        Assert.True(response.BodyText == ("stdout-text-" + marker + "\n").Length.ToString(System.Globalization.CultureInfo.InvariantCulture), response.ToString());

        string log = await server.WaitForLogAsync("logged-" + marker, LogTimeout, mark);
        Assert.Contains($"\nstdout-text-{marker}\n", "\n" + log, StringComparison.Ordinal);
        Assert.Contains($"\nstderr-text-{marker}\n", "\n" + log, StringComparison.Ordinal);
        Assert.Contains($"\nlogged-{marker}\n", "\n" + log, StringComparison.Ordinal);
    }

    /// <summary>A lone surrogate printed through the text stream is logged backslash-escaped (its errors are backslashreplace), not raised.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task A_lone_surrogate_printed_to_the_text_stream_is_logged_escaped(string engine)
    {
        var server = await pool.GetAsync(engine, "textstream_app:app", "--threads", "4");
        var marker = Guid.NewGuid().ToString("N");
        int mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/surrogate?" + marker);
        Assert.True(response.BodyText == "printed", response.ToString());
        await server.WaitForLogAsync($@"lone \udcff surrogate {marker}", LogTimeout, mark);
    }

    /// <summary>print() from eight threads at once: every line reaches the log whole, none cut by another thread's.</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Lines_printed_from_many_threads_are_not_interleaved(string engine)
    {
        var server = await pool.GetAsync(engine, "textstream_app:app", "--threads", "4");
        var marker = Guid.NewGuid().ToString("N");
        int mark = server.ErrorLogPosition;
        var response = await RawHttp.GetAsync(server, "/threads?" + marker);
        Assert.True(response.BodyText == "printed", response.ToString());

        await server.WaitForLogAsync($"{marker}-t7-line99-", LogTimeout, mark);
        Assert.True(await EventuallyAsync(() => Task.FromResult(
            server.ErrorLogSince(mark).Split('\n').Count(l => l.StartsWith(marker, StringComparison.Ordinal)) == 800), LogTimeout));
        string x40 = new('x', 40);
        var lines = server.ErrorLogSince(mark).Split('\n').Where(l => l.Contains(marker, StringComparison.Ordinal)).ToList();
        Assert.Equal(800, lines.Count);
        Assert.All(lines, line => Assert.Matches($"^{marker}-t[0-7]-line[0-9]+-{x40}-end$", line));
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
