using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Osprey.Tests.Infrastructure;

/// <summary>What one HTTP/2 stream has received so far (updated by the connection's reader).</summary>
public sealed class RawHttp2Stream
{
    private readonly Lock _lock = new();
    private readonly MemoryStream _data = new();
    private readonly List<TimeSpan> _dataTimes = [];

    /// <summary>The response's :status, once its HEADERS have come.</summary>
    public int? Status { get; internal set; }

    /// <summary>END_STREAM came from the server.</summary>
    public bool Ended { get; internal set; }

    /// <summary>The error code of a RST_STREAM from the server.</summary>
    public int? ResetCode { get; internal set; }

    /// <summary>Ended one way or the other.</summary>
    public bool Done => Ended || ResetCode is not null;

    public byte[] Data
    {
        get
        {
            lock (_lock)
            {
                return _data.ToArray();
            }
        }
    }

    public string Text => Encoding.UTF8.GetString(Data);

    /// <summary>When each non-empty DATA frame came, from the connection's start.</summary>
    public IReadOnlyList<TimeSpan> DataTimes
    {
        get
        {
            lock (_lock)
            {
                return [.. _dataTimes];
            }
        }
    }

    internal void Append(ReadOnlySpan<byte> data, TimeSpan at)
    {
        lock (_lock)
        {
            _data.Write(data);
            _dataTimes.Add(at);
        }
    }

    public override string ToString() =>
        $"status {Status?.ToString() ?? "none"}, ended {Ended}, reset {ResetCode?.ToString() ?? "none"}, {Data.Length} body bytes";
}

/// <summary>
/// A bare HTTP/2-over-TLS client, for requests HttpClient will not send (it drops connection-specific
/// header fields) and for watching a connection's streams frame by frame: each stream's :status, DATA,
/// END_STREAM and RST_STREAM, and the connection's GOAWAY or close. Header fields go out exactly as
/// given, as HPACK literals without Huffman coding. Of a response's header block only :status is
/// decoded: it is always the block's first field, a static-table index or a literal, since this
/// client sets the server's HPACK dynamic table size to 0 (so none has to be kept).
/// </summary>
public sealed class RawHttp2Connection : IAsyncDisposable
{
    private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, Ping = 0x6, GoAway = 0x7;
    private const byte EndStream = 0x1, Ack = 0x1, EndHeaders = 0x4, Padded = 0x8, Priority = 0x20;

    private readonly TcpClient _tcp;
    private readonly SslStream _ssl;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Lock _streamsLock = new();
    private readonly Dictionary<int, RawHttp2Stream> _streams = [];
    private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    private Task _reader = Task.CompletedTask;
    private int _nextStreamId = 1;

    private RawHttp2Connection(TcpClient tcp, SslStream ssl)
    {
        _tcp = tcp;
        _ssl = ssl;
    }

    /// <summary>The server closed the connection (or it failed).</summary>
    public bool Closed { get; private set; }

    /// <summary>The error code of a GOAWAY from the server.</summary>
    public int? GoAwayCode { get; private set; }

    /// <summary>Time since the connection was opened.</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    public static async Task<RawHttp2Connection> ConnectAsync(int port)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        var ssl = new SslStream(tcp.GetStream());
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        });
        if (ssl.NegotiatedApplicationProtocol != SslApplicationProtocol.Http2)
        {
            throw new InvalidOperationException($"ALPN chose '{ssl.NegotiatedApplicationProtocol}', not h2");
        }
        var connection = new RawHttp2Connection(tcp, ssl);
        // No dynamic table (SETTINGS_HEADER_TABLE_SIZE 0), and large windows, so that the server
        // never waits for a WINDOW_UPDATE from this client (SETTINGS_INITIAL_WINDOW_SIZE).
        byte[] settings = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(settings, 0x1);
        BinaryPrimitives.WriteUInt32BigEndian(settings.AsSpan(2), 0);
        BinaryPrimitives.WriteUInt16BigEndian(settings.AsSpan(6), 0x4);
        BinaryPrimitives.WriteUInt32BigEndian(settings.AsSpan(8), 1 << 30);
        byte[] increment = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(increment, (1u << 30) - 65535);
        await ssl.WriteAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray());
        await connection.WriteFrameAsync(Settings, 0, 0, settings);
        await connection.WriteFrameAsync(0x8, 0, 0, increment);
        connection._reader = Task.Run(connection.ReadLoopAsync);
        return connection;
    }

    /// <summary>The pseudo-header fields of a request (with :authority), then <paramref name="fields"/>.</summary>
    public static (string Name, string Value)[] Request(string method, string path, params (string Name, string Value)[] fields) =>
        [(":method", method), (":path", path), (":scheme", "https"), (":authority", "127.0.0.1"), .. fields];

    /// <summary>Opens a stream with these header fields; its id.</summary>
    public async Task<int> SendHeadersAsync(IReadOnlyList<(string Name, string Value)> fields, bool endStream)
    {
        var block = new MemoryStream();
        foreach ((string name, string value) in fields)
        {
            block.WriteByte(0x00);
            WriteString(block, name);
            WriteString(block, value);
        }
        if (block.Length > 16384)
        {
            throw new InvalidOperationException("header block larger than one frame");
        }
        int id;
        lock (_streamsLock)
        {
            id = _nextStreamId;
            _nextStreamId += 2;
            _streams[id] = new RawHttp2Stream();
        }
        await WriteFrameAsync(Headers, (byte)(EndHeaders | (endStream ? EndStream : 0)), id, block.ToArray());
        return id;
    }

    public Task SendDataAsync(int streamId, ReadOnlyMemory<byte> data, bool endStream) =>
        WriteFrameAsync(Data, endStream ? EndStream : (byte)0, streamId, data);

    public RawHttp2Stream Stream(int id)
    {
        lock (_streamsLock)
        {
            return _streams[id];
        }
    }

    /// <summary>Sends a request and waits for its stream to end.</summary>
    public async Task<RawHttp2Stream> ExchangeAsync(IReadOnlyList<(string Name, string Value)> fields, byte[]? body = null, TimeSpan? timeout = null)
    {
        int id = await SendHeadersAsync(fields, endStream: body is null);
        if (body is not null)
        {
            await SendDataAsync(id, body, endStream: true);
        }
        RawHttp2Stream stream = Stream(id);
        await WaitAsync(() => stream.Done || Closed, timeout ?? TimeSpan.FromSeconds(10));
        return stream;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds or <paramref name="timeout"/> passes; whether it held.</summary>
    public static async Task<bool> WaitAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }
            await Task.Delay(20);
        }
        return true;
    }

    private static void WriteString(MemoryStream block, string text)
    {
        byte[] bytes = Encoding.Latin1.GetBytes(text);
        WriteInteger(block, 0x00, 7, bytes.Length);
        block.Write(bytes);
    }

    private static void WriteInteger(MemoryStream block, byte flags, int prefixBits, int value)
    {
        int max = (1 << prefixBits) - 1;
        if (value < max)
        {
            block.WriteByte((byte)(flags | value));
            return;
        }
        block.WriteByte((byte)(flags | max));
        value -= max;
        while (value >= 128)
        {
            block.WriteByte((byte)(value % 128 + 128));
            value /= 128;
        }
        block.WriteByte((byte)value);
    }

    private async Task WriteFrameAsync(byte type, byte flags, int streamId, ReadOnlyMemory<byte> payload)
    {
        byte[] frame = new byte[9 + payload.Length];
        frame[0] = (byte)(payload.Length >> 16);
        frame[1] = (byte)(payload.Length >> 8);
        frame[2] = (byte)payload.Length;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), streamId);
        payload.Span.CopyTo(frame.AsSpan(9));
        await _writeLock.WaitAsync();
        try
        {
            await _ssl.WriteAsync(frame);
            await _ssl.FlushAsync();
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        byte[] head = new byte[9];
        try
        {
            while (true)
            {
                await _ssl.ReadExactlyAsync(head);
                int length = (head[0] << 16) | (head[1] << 8) | head[2];
                byte type = head[3];
                byte flags = head[4];
                int streamId = BinaryPrimitives.ReadInt32BigEndian(head.AsSpan(5)) & 0x7FFFFFFF;
                byte[] payload = new byte[length];
                await _ssl.ReadExactlyAsync(payload);
                await OnFrameAsync(type, flags, streamId, payload);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or EndOfStreamException)
        {
            Closed = true;
        }
    }

    private async Task OnFrameAsync(byte type, byte flags, int streamId, byte[] payload)
    {
        RawHttp2Stream? stream = null;
        lock (_streamsLock)
        {
            _streams.TryGetValue(streamId, out stream);
        }
        switch (type)
        {
            case Data when stream is not null:
                ReadOnlySpan<byte> data = Unpad(payload, flags);
                if (!data.IsEmpty)
                {
                    stream.Append(data, _clock.Elapsed);
                }
                stream.Ended |= (flags & EndStream) != 0;
                break;
            case Headers when stream is not null:
                ReadOnlySpan<byte> block = Unpad(payload, flags);
                if ((flags & Priority) != 0)
                {
                    block = block[5..];
                }
                // After a final status, a header block is trailers; after a 1xx, it is the final head.
                if (stream.Status is null or (>= 100 and < 200))
                {
                    stream.Status = DecodeStatus(block);
                }
                stream.Ended |= (flags & EndStream) != 0;
                break;
            case RstStream when stream is not null:
                stream.ResetCode = BinaryPrimitives.ReadInt32BigEndian(payload);
                break;
            case Settings when (flags & Ack) == 0:
                await WriteFrameAsync(Settings, Ack, 0, ReadOnlyMemory<byte>.Empty);
                break;
            case Ping when (flags & Ack) == 0:
                await WriteFrameAsync(Ping, Ack, 0, payload);
                break;
            case GoAway:
                GoAwayCode = BinaryPrimitives.ReadInt32BigEndian(payload.AsSpan(4));
                break;
        }
    }

    private static ReadOnlySpan<byte> Unpad(byte[] payload, byte flags) =>
        (flags & Padded) == 0 ? payload : payload.AsSpan(1, payload.Length - 1 - payload[0]);

    /// <summary>The :status of a response header block: its first field (after any table size updates).</summary>
    private static int? DecodeStatus(ReadOnlySpan<byte> block)
    {
        int i = 0;
        while (i < block.Length && (block[i] & 0xE0) == 0x20)
        {
            ReadInteger(block, ref i, 5);
        }
        if (i >= block.Length)
        {
            return null;
        }
        if ((block[i] & 0x80) != 0)
        {
            // RFC 7541 Appendix A: static entries 8 to 14 are :status 200, 204, 206, 304, 400, 404, 500.
            return ReadInteger(block, ref i, 7) switch
            {
                8 => 200, 9 => 204, 10 => 206, 11 => 304, 12 => 400, 13 => 404, 14 => 500,
                _ => null,
            };
        }
        int nameIndex = ReadInteger(block, ref i, (block[i] & 0xC0) == 0x40 ? 6 : 4);
        if (nameIndex is < 8 or > 14 || (block[i] & 0x80) != 0)
        {
            return null;
        }
        int length = ReadInteger(block, ref i, 7);
        return int.Parse(Encoding.ASCII.GetString(block.Slice(i, length)), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static int ReadInteger(ReadOnlySpan<byte> block, ref int i, int prefixBits)
    {
        int max = (1 << prefixBits) - 1;
        int value = block[i++] & max;
        if (value < max)
        {
            return value;
        }
        int shift = 0;
        byte b;
        do
        {
            b = block[i++];
            value += (b & 0x7F) << shift;
            shift += 7;
        }
        while ((b & 0x80) != 0);
        return value;
    }

    public async ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        await _ssl.DisposeAsync();
        try
        {
            await _reader;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
        _writeLock.Dispose();
    }
}
