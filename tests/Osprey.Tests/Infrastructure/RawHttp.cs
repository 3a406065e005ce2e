using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Osprey.Tests.Infrastructure;

/// <summary>How a response body was delimited on the wire.</summary>
public enum BodyFraming
{
    /// <summary>No body allowed (HEAD, 1xx, 204, 304).</summary>
    None,
    ContentLength,
    Chunked,
    /// <summary>Neither Content-Length nor chunked: the body ends when the server closes the connection.</summary>
    UntilClose,
}

/// <summary>One response as read off the wire.</summary>
public sealed class RawHttpResponse
{
    public required string StatusLine { get; init; }
    public required string Version { get; init; }
    public required int StatusCode { get; init; }
    public required string Reason { get; init; }

    /// <summary>Headers in the order received, names as the server spelled them.</summary>
    public required IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; }

    /// <summary>The body after de-chunking.</summary>
    public required byte[] Body { get; init; }

    public required BodyFraming Framing { get; init; }

    /// <summary>For chunked bodies, the exact bytes of the chunked framing (sizes, data, trailer).</summary>
    public byte[]? RawChunkedBody { get; init; }

    /// <summary>False when the connection ended before the body was complete (short Content-Length, no last chunk).</summary>
    public required bool Complete { get; init; }

    /// <summary>True when the server closed (or reset) the connection while this response was being read.</summary>
    public required bool ConnectionClosed { get; init; }

    public string BodyText => Encoding.UTF8.GetString(Body);

    public string BodyLatin1 => Encoding.Latin1.GetString(Body);

    public string? Header(string name) =>
        Headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;

    public IReadOnlyList<string> HeaderValues(string name) =>
        [.. Headers.Where(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value)];

    public bool HasHeader(string name) => HeaderValues(name).Count > 0;

    public JsonElement Json()
    {
        using var doc = JsonDocument.Parse(Body);
        return doc.RootElement.Clone();
    }

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(StatusLine).Append('\n');
        foreach (var (k, v) in Headers)
        {
            sb.Append(k).Append(": ").Append(v).Append('\n');
        }
        sb.Append($"[framing={Framing}, complete={Complete}, closed={ConnectionClosed}, {Body.Length} body bytes]\n");
        var text = BodyLatin1;
        sb.Append(text.Length > 2000 ? text[..2000] + "..." : text);
        return sb.ToString();
    }
}

/// <summary>The server closed the connection before a response (or its status line) arrived.</summary>
public sealed class ConnectionClosedByServerException(string message) : IOException(message);

/// <summary>
/// A raw TCP connection to 127.0.0.1 for exact bytes: send anything, parse responses one by one
/// (so pipelined responses on one connection can be read in turn), detect a close by the server.
/// </summary>
public sealed class RawHttpConnection : IDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly byte[] _chunk = new byte[64 * 1024];
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;
    private Task<int>? _pendingRead;

    private RawHttpConnection(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    /// <summary>The server closed the connection (EOF or reset) — known once a read has seen it.</summary>
    public bool ServerClosed { get; private set; }

    /// <summary>The close was a reset (RST) rather than an orderly FIN.</summary>
    public bool WasReset { get; private set; }

    public int LocalPort => ((IPEndPoint)_client.Client.LocalEndPoint!).Port;

    /// <summary>Bytes received but not yet consumed by a parsed response.</summary>
    public int BufferedCount => _end - _start;

    public static async Task<RawHttpConnection> OpenAsync(int port)
    {
        var client = new TcpClient { NoDelay = true };
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port).ConfigureAwait(false);
        }
        catch
        {
            client.Dispose();
            throw;
        }
        return new RawHttpConnection(client);
    }

    public Task SendAsync(string latin1) => SendAsync(Encoding.Latin1.GetBytes(latin1));

    public async Task SendAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes).ConfigureAwait(false);
        await _stream.FlushAsync().ConfigureAwait(false);
    }

    /// <summary>Half-closes the sending side (the server sees end of input).</summary>
    public void ShutdownSend() => _client.Client.Shutdown(SocketShutdown.Send);

    /// <summary>Closes with a reset (SO_LINGER 0), the way a client that vanishes mid-response looks to the server.</summary>
    public void Abort()
    {
        _client.Client.LingerState = new LingerOption(true, 0);
        _client.Client.Close();
    }

    /// <summary>Reads the next response (1xx interim responses are returned as responses of their own).</summary>
    public async Task<RawHttpResponse> ReadResponseAsync(bool headRequest = false, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? DefaultTimeout);
        var statusLine = await ReadLineAsync(deadline).ConfigureAwait(false)
            ?? throw new ConnectionClosedByServerException(
                $"Connection closed by server before a status line. Unparsed bytes: '{Encoding.Latin1.GetString(_buffer, _start, _end - _start)}'");
        var parts = statusLine.Split(' ', 3);
        if (parts.Length < 2 || !parts[0].StartsWith("HTTP/", StringComparison.Ordinal) || !int.TryParse(parts[1], out var status))
        {
            throw new InvalidDataException($"Not a status line: '{statusLine}'");
        }
        var headers = new List<KeyValuePair<string, string>>();
        while (true)
        {
            var line = await ReadLineAsync(deadline).ConfigureAwait(false)
                ?? throw new ConnectionClosedByServerException($"Connection closed by server inside the headers of '{statusLine}'");
            if (line.Length == 0)
            {
                break;
            }
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new InvalidDataException($"Malformed header line '{line}' in response '{statusLine}'");
            }
            headers.Add(new(line[..colon], line[(colon + 1)..].Trim(' ', '\t')));
        }

        var response = new RawHttpResponse
        {
            StatusLine = statusLine,
            Version = parts[0],
            StatusCode = status,
            Reason = parts.Length > 2 ? parts[2] : "",
            Headers = headers,
            Body = [],
            Framing = BodyFraming.None,
            Complete = true,
            ConnectionClosed = false,
        };
        var transferEncoding = response.Header("Transfer-Encoding");
        var contentLength = response.Header("Content-Length");

        if (headRequest || status is (>= 100 and < 200) or 204 or 304)
        {
            return Finish(response, [], BodyFraming.None, null, complete: true);
        }
        if (transferEncoding is not null && transferEncoding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            return await ReadChunkedAsync(response, deadline).ConfigureAwait(false);
        }
        if (contentLength is not null)
        {
            var length = long.Parse(contentLength, System.Globalization.CultureInfo.InvariantCulture);
            while (BufferedCount < length && await FillAsync(deadline).ConfigureAwait(false))
            {
            }
            var take = (int)Math.Min(length, BufferedCount);
            var body = Take(take);
            return Finish(response, body, BodyFraming.ContentLength, null, complete: take == length);
        }
        while (await FillAsync(deadline).ConfigureAwait(false))
        {
        }
        return Finish(response, Take(BufferedCount), BodyFraming.UntilClose, null, complete: !WasReset);
    }

    /// <summary>Reads responses, returning the interim (1xx) ones and the final one.</summary>
    public async Task<(IReadOnlyList<RawHttpResponse> Interim, RawHttpResponse Final)> ReadFinalResponseAsync(
        bool headRequest = false, TimeSpan? timeout = null)
    {
        var interim = new List<RawHttpResponse>();
        while (true)
        {
            var response = await ReadResponseAsync(headRequest, timeout).ConfigureAwait(false);
            if (response.StatusCode is >= 100 and < 200)
            {
                interim.Add(response);
                continue;
            }
            return (interim, response);
        }
    }

    /// <summary>Waits until the received bytes (not yet consumed) contain <paramref name="marker"/>; they stay buffered.</summary>
    public async Task WaitForBytesAsync(string marker, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var needle = Encoding.Latin1.GetBytes(marker);
        while (_buffer.AsSpan(_start, _end - _start).IndexOf(needle) < 0)
        {
            if (!await FillAsync(deadline).ConfigureAwait(false))
            {
                throw new ConnectionClosedByServerException(
                    $"Connection closed before '{marker}' arrived. Received: '{Encoding.Latin1.GetString(_buffer, _start, _end - _start)}'");
            }
        }
    }

    /// <summary>
    /// Reads until the server closes the connection and returns every byte not yet consumed.
    /// Throws <see cref="TimeoutException"/> if the connection is still open after <paramref name="timeout"/>.
    /// </summary>
    public async Task<byte[]> ReadToCloseAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (await FillAsync(deadline).ConfigureAwait(false))
        {
        }
        return Take(BufferedCount);
    }

    /// <summary>Returns whatever arrives within <paramref name="window"/> (without failing if nothing does); consumes it.</summary>
    public async Task<byte[]> ReadForAsync(TimeSpan window)
    {
        var deadline = DateTime.UtcNow + window;
        try
        {
            while (await FillAsync(deadline).ConfigureAwait(false))
            {
            }
        }
        catch (TimeoutException)
        {
            // Expected: the window ended with the connection still open.
        }
        return Take(BufferedCount);
    }

    private RawHttpResponse Finish(RawHttpResponse head, byte[] body, BodyFraming framing, byte[]? rawChunked, bool complete) =>
        new()
        {
            StatusLine = head.StatusLine,
            Version = head.Version,
            StatusCode = head.StatusCode,
            Reason = head.Reason,
            Headers = head.Headers,
            Body = body,
            Framing = framing,
            RawChunkedBody = rawChunked,
            Complete = complete,
            ConnectionClosed = ServerClosed,
        };

    private async Task<RawHttpResponse> ReadChunkedAsync(RawHttpResponse head, DateTime deadline)
    {
        var body = new MemoryStream();
        var raw = new MemoryStream();
        var complete = false;
        while (true)
        {
            var sizeLine = await ReadLineAsync(deadline).ConfigureAwait(false);
            if (sizeLine is null)
            {
                break;
            }
            raw.Write(Encoding.Latin1.GetBytes(sizeLine + "\r\n"));
            var sizeText = sizeLine.Split(';', 2)[0].Trim();
            var size = int.Parse(sizeText, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
            if (size == 0)
            {
                // Trailer section, then the final empty line.
                string? trailer;
                while ((trailer = await ReadLineAsync(deadline).ConfigureAwait(false)) is not null)
                {
                    raw.Write(Encoding.Latin1.GetBytes(trailer + "\r\n"));
                    if (trailer.Length == 0)
                    {
                        complete = true;
                        break;
                    }
                }
                break;
            }
            while (BufferedCount < size + 2 && await FillAsync(deadline).ConfigureAwait(false))
            {
            }
            if (BufferedCount < size + 2)
            {
                var partial = Take(BufferedCount);
                body.Write(partial, 0, Math.Min(partial.Length, size));
                raw.Write(partial);
                break;
            }
            var data = Take(size + 2);
            if (data[size] != '\r' || data[size + 1] != '\n')
            {
                throw new InvalidDataException($"Chunk of {size} bytes not followed by CRLF in response '{head.StatusLine}'");
            }
            body.Write(data, 0, size);
            raw.Write(data);
        }
        return Finish(head, body.ToArray(), BodyFraming.Chunked, raw.ToArray(), complete);
    }

    private byte[] Take(int count)
    {
        var result = _buffer.AsSpan(_start, count).ToArray();
        _start += count;
        return result;
    }

    /// <summary>A CRLF-terminated line (without the CRLF), or null if the connection closed first.</summary>
    private async Task<string?> ReadLineAsync(DateTime deadline)
    {
        var scanned = 0;
        while (true)
        {
            var span = _buffer.AsSpan(_start + scanned, _end - _start - scanned);
            var lf = span.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                var lineEnd = _start + scanned + lf;
                if (lineEnd == _start || _buffer[lineEnd - 1] != '\r')
                {
                    throw new InvalidDataException(
                        $"Bare LF (no CR) in '{Encoding.Latin1.GetString(_buffer, _start, lineEnd - _start + 1)}'");
                }
                var line = Encoding.Latin1.GetString(_buffer, _start, lineEnd - 1 - _start);
                _start = lineEnd + 1;
                return line;
            }
            scanned = _end - _start;
            if (!await FillAsync(deadline).ConfigureAwait(false))
            {
                return null;
            }
        }
    }

    /// <summary>Reads more bytes into the buffer; false at end of stream. Throws <see cref="TimeoutException"/> past the deadline.</summary>
    private async Task<bool> FillAsync(DateTime deadline)
    {
        if (ServerClosed)
        {
            return false;
        }
        // The pending read survives a timeout, so a later call picks up its result.
        _pendingRead ??= ReadChunkAsync();
        var remaining = deadline - DateTime.UtcNow;
        if (remaining > TimeSpan.Zero)
        {
            using var cts = new CancellationTokenSource();
            var delay = Task.Delay(remaining, cts.Token);
            if (await Task.WhenAny(_pendingRead, delay).ConfigureAwait(false) != _pendingRead)
            {
                throw Timeout();
            }
            await cts.CancelAsync().ConfigureAwait(false);
        }
        else if (!_pendingRead.IsCompleted)
        {
            throw Timeout();
        }
        var n = await _pendingRead.ConfigureAwait(false);
        _pendingRead = null;
        if (n == 0)
        {
            ServerClosed = true;
            return false;
        }
        if (_buffer.Length - _end < n)
        {
            var live = _end - _start;
            var target = live + n <= _buffer.Length ? _buffer : new byte[Math.Max(_buffer.Length * 2, live + n)];
            Buffer.BlockCopy(_buffer, _start, target, 0, live);
            _buffer = target;
            _start = 0;
            _end = live;
        }
        Buffer.BlockCopy(_chunk, 0, _buffer, _end, n);
        _end += n;
        return true;
    }

    private TimeoutException Timeout() =>
        new($"Timed out waiting for the server. Received but unparsed: '{Encoding.Latin1.GetString(_buffer, _start, Math.Min(_end - _start, 4000))}'");

    private async Task<int> ReadChunkAsync()
    {
        try
        {
            return await _stream.ReadAsync(_chunk).ConfigureAwait(false);
        }
        catch (IOException)
        {
            WasReset = true;
            return 0;
        }
        catch (ObjectDisposedException)
        {
            return 0;
        }
    }

    public void Dispose()
    {
        _client.Dispose();
    }
}

/// <summary>Builds raw requests and runs one-shot exchanges.</summary>
public static class RawHttp
{
    /// <summary>
    /// A request with a Host header for 127.0.0.1. <paramref name="headers"/> are full "Name: value" lines.
    /// When <paramref name="body"/> is given and no Content-Length / Transfer-Encoding header is, a Content-Length is added.
    /// </summary>
    public static byte[] Request(string method, string target, int port, IEnumerable<string>? headers = null,
        byte[]? body = null, string version = "HTTP/1.1")
    {
        var list = headers?.ToList() ?? [];
        var sb = new StringBuilder();
        sb.Append(method).Append(' ').Append(target).Append(' ').Append(version).Append("\r\n");
        if (!list.Any(h => h.StartsWith("Host:", StringComparison.OrdinalIgnoreCase)))
        {
            sb.Append("Host: 127.0.0.1:").Append(port).Append("\r\n");
        }
        foreach (var h in list)
        {
            sb.Append(h).Append("\r\n");
        }
        if (body is not null && !list.Any(h => h.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)
                                             || h.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase)))
        {
            sb.Append("Content-Length: ").Append(body.Length).Append("\r\n");
        }
        sb.Append("\r\n");
        var head = Encoding.Latin1.GetBytes(sb.ToString());
        return body is null ? head : [.. head, .. body];
    }

    public static byte[] Get(string target, int port, params string[] headers) => Request("GET", target, port, headers);

    /// <summary>Opens a connection, sends <paramref name="request"/>, reads one final response, closes.</summary>
    public static async Task<RawHttpResponse> SendAsync(int port, byte[] request, bool headRequest = false, TimeSpan? timeout = null)
    {
        using var connection = await RawHttpConnection.OpenAsync(port).ConfigureAwait(false);
        await connection.SendAsync(request).ConfigureAwait(false);
        var (_, final) = await connection.ReadFinalResponseAsync(headRequest, timeout).ConfigureAwait(false);
        return final;
    }

    public static Task<RawHttpResponse> GetAsync(OspreyServer server, string target, params string[] headers) =>
        SendAsync(server.Port, Get(target, server.Port, headers));

    /// <summary>GETs <paramref name="target"/>, asserts a 200 and returns its JSON body.</summary>
    public static async Task<System.Text.Json.JsonElement> GetJsonAsync(OspreyServer server, string target = "/")
    {
        var response = await GetAsync(server, target).ConfigureAwait(false);
        Assert.True(response.StatusCode == 200, response.ToString());
        return response.Json();
    }

    /// <summary>A body encoded with the chunked transfer coding, split into the given pieces.</summary>
    public static byte[] Chunked(params string[] pieces)
    {
        var sb = new StringBuilder();
        foreach (var piece in pieces)
        {
            sb.Append(Encoding.Latin1.GetByteCount(piece).ToString("x", System.Globalization.CultureInfo.InvariantCulture)).Append("\r\n").Append(piece).Append("\r\n");
        }
        sb.Append("0\r\n\r\n");
        return Encoding.Latin1.GetBytes(sb.ToString());
    }
}
