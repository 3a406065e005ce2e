using System.Net;
using System.Net.Sockets;
using System.Text;
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

    /// <summary>
    /// A 19.7 MB file (more than the socket buffers hold) to a client that reads 32 KB at a time with pauses: the socket fills again
    /// and again, so the lean engine sends most of the file from its loop, 64 KiB per sendfile,
    /// resuming at each EPOLLOUT edge. The bytes arrive whole and in order, and with one Python
    /// thread the lean engine answers another request while the file is still going out.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Large_file_reaches_a_slow_reader_whole(string engine)
    {
        const int Copies = 64;
        var server = await pool.GetAsync(engine, "response_app:app", "--threads", "1");
        using var reader = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 32 * 1024 };
        await reader.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port));
        await reader.SendAsync(RawHttp.Get($"/filewrapper_big?copies={Copies}", server.Port));

        var received = new MemoryStream();
        var buffer = new byte[32 * 1024];
        int headLength = -1;
        long expected = long.MaxValue;
        bool answeredDuringTransfer = false;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (received.Length < expected)
        {
            int n = await reader.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            Assert.True(n > 0, $"the server closed after {received.Length} bytes");
            received.Write(buffer, 0, n);
            if (headLength < 0 && received.Length > 4)
            {
                string text = Encoding.Latin1.GetString(received.GetBuffer(), 0, (int)received.Length);
                int end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                if (end >= 0)
                {
                    headLength = end + 4;
                    Assert.StartsWith("HTTP/1.1 200 ", text, StringComparison.Ordinal);
                    expected = headLength + (long)FileContent.Length * Copies;
                }
            }
            if (engine == "osprey" && !answeredDuringTransfer && received.Length > 1 << 20)
            {
                var next = await RawHttp.GetAsync(server, "/list1");
                Assert.Equal("hello", next.BodyText);
                answeredDuringTransfer = true;
            }
            await Task.Delay(2);
        }
        Assert.Equal(expected, received.Length);
        byte[] body = received.GetBuffer().AsSpan(headLength, (int)(received.Length - headLength)).ToArray();
        for (int copy = 0; copy < Copies; copy++)
        {
            Assert.True(body.AsSpan(copy * FileContent.Length, FileContent.Length).SequenceEqual(FileContent), $"copy {copy} differs");
        }
        if (engine == "osprey")
        {
            Assert.True(answeredDuringTransfer);
        }
        await AssertStillServesAsync(server);
    }

    /// <summary>
    /// PEP 3333: a file wrapper sends what iter(filelike.read, b'') would. gzip.open's GzipFile has the compressed
    /// file's fileno(), so it must be read through read() (the decompressed bytes), as must a file whose read() is
    /// overridden; wrappers whose read() is a plain file's own are sent from that file.
    /// </summary>
    [Theory]
    [MemberData(nameof(KindCases))]
    public async Task A_file_wrapper_sends_what_read_returns(string engine, string kind)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, $"/filewrapper_kind?kind={kind}");

        Assert.True(response.StatusCode == 200 && response.Complete, response.ToString());
        byte[] expected = kind switch
        {
            "inverted" => [.. FileContent.Select(b => (byte)~b)],
            "offset" => FileContent[1000..],
            _ => FileContent,
        };
        Assert.True(expected.AsSpan().SequenceEqual(response.Body),
            $"{kind}: {response.Body.Length} bytes starting {Convert.ToHexString(response.Body.AsSpan(0, Math.Min(8, response.Body.Length)))}");
        await AssertStillServesAsync(server);
    }

    public static TheoryData<string, string> KindCases => Engines.Cross(["gzip", "inverted", "proxy", "fileio", "offset"]);

    /// <summary>
    /// Only plain files (open(), io.FileIO and subclasses that keep their read(), Django's File proxying one) go
    /// out with sendfile, which the lean engine's debug log names; gzip.open and a read() override are read through.
    /// </summary>
    [Fact]
    public async Task Lean_engine_uses_sendfile_only_for_plain_files()
    {
        var server = await pool.GetAsync("osprey", "response_app:app", "--log-level", "debug");
        foreach (string kind in new[] { "proxy", "fileio", "offset", "gzip", "inverted" })
        {
            int position = server.ErrorLogPosition;
            var response = await RawHttp.GetAsync(server, $"/filewrapper_kind?kind={kind}");
            Assert.True(response.StatusCode == 200 && response.Complete, response.ToString());
            await RawHttp.GetAsync(server, "/list1");
            // The access log is off: the last debug line of a request is its own, so by now any sendfile line is there.
            await Task.Delay(100);
            string log = server.ErrorLogSince(position);
            bool plain = kind is "proxy" or "fileio" or "offset";
            Assert.True(plain == log.Contains("sendfile: ", StringComparison.Ordinal), $"{kind}:\n{log}");
            if (plain)
            {
                Assert.Contains($"sendfile: {FileContent.Length - (kind == "offset" ? 1000 : 0)} bytes", log, StringComparison.Ordinal);
            }
        }
    }

    public static TheoryData<string, string> ShrinkCases => Engines.Cross(["chunked", "content-length"]);

    /// <summary>
    /// A file truncated while it is being sent (a log rotated, an upload replaced): the bytes promised
    /// when sending began no longer exist, so the response must not end as if complete. A chunked
    /// body gets no last chunk and a Content-Length body stays short; the connection is cut either
    /// way. The test truncates the file itself once the first of its bytes have arrived, and reads
    /// nothing meanwhile, so the server is still far from the end of the 64 MB (its buffers and the
    /// sockets' hold a few MB at most).
    /// </summary>
    [Theory, MemberData(nameof(ShrinkCases))]
    public async Task A_file_that_shrinks_while_it_is_sent_cuts_the_response(string engine, string framing)
    {
        await using var server = await OspreyServer.StartAsync(engine, "response_app:app", "--threads", "2");
        int mark = server.ErrorLogPosition;
        var id = Guid.NewGuid().ToString("N");
        string? file = null;
        try
        {
            using var connection = await RawHttpConnection.OpenAsync(server.Port);
            string query = framing == "chunked" ? "&chunked=1" : "";
            await connection.SendAsync(RawHttp.Get($"/filewrapper_shrink?id={id}{query}", server.Port));
            // The file's first bytes (zeros; nothing else in the response is): sending has begun, with its size known.
            await connection.WaitForBytesAsync(new string('\0', 4096), TimeSpan.FromSeconds(10));
            file = Path.Combine(Path.GetTempPath(), $"osprey-shrink-{id}.bin");
            Assert.True(File.Exists(file), $"the app's file is not at {file}");
            using (var handle = File.OpenHandle(file, FileMode.Open, FileAccess.Write))
            {
                RandomAccess.SetLength(handle, 0);
            }

            var response = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(30));
            Assert.Equal(200, response.StatusCode);
            Assert.Equal(file, response.Header("X-File"));
            Assert.Equal(framing == "chunked" ? BodyFraming.Chunked : BodyFraming.ContentLength, response.Framing);
            Assert.False(response.Complete, $"a truncated file was sent as a complete response of {response.Body.Length} bytes");
            Assert.True(response.Body.Length < 64 << 20, response.Body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.True(response.ConnectionClosed, "the connection must be cut");
        }
        finally
        {
            if (file is not null)
            {
                File.Delete(file);
            }
        }
        if (engine == "kestrel")
        {
            // The lean engine notices the short file in its event loop, where the request is no longer known.
            string log = await server.WaitForLogAsync("shrank", LogTimeout, mark);
            Assert.Contains($"GET /filewrapper_shrink?id={id}", log, StringComparison.Ordinal);
        }
        AssertNoDotNetStackTrace(server.ErrorLogSince(mark));
        await AssertStillServesAsync(server);
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
