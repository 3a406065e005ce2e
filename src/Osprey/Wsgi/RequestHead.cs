using System.Text;

namespace Osprey.Wsgi;

/// <summary>
/// The parsed request line and headers, in one reusable byte buffer so that an engine fills it
/// with one copy from its parser and the environ is built straight from it.
/// Header names and values are the bytes on the wire (native strings decode them as latin-1).
/// </summary>
public sealed class RequestHead
{
    private byte[] _buffer = new byte[4096];
    private int _used;
    private Range[] _headers = new Range[32];
    private Range _target;

    private readonly record struct Range(int NameStart, int NameLength, int ValueStart, int ValueLength);

    public string Method { get; set; } = "GET";
    public HttpVersion Version { get; set; } = HttpVersion.Http11;
    public string Scheme { get; set; } = "http";
    public string RemoteAddress { get; set; } = "";
    public int RemotePort { get; set; }
    public string LocalAddress { get; set; } = "";
    public int LocalPort { get; set; }
    public int HeaderCount { get; private set; }

    public ReadOnlySpan<byte> Target => _buffer.AsSpan(_target.NameStart, _target.NameLength);
    public ReadOnlySpan<byte> HeaderName(int index) => _buffer.AsSpan(_headers[index].NameStart, _headers[index].NameLength);
    public ReadOnlySpan<byte> HeaderValue(int index) => _buffer.AsSpan(_headers[index].ValueStart, _headers[index].ValueLength);

    public void Reset()
    {
        _used = 0;
        HeaderCount = 0;
        _target = default;
    }

    public void SetTarget(ReadOnlySpan<byte> target)
    {
        int start = Append(target);
        _target = new Range(start, target.Length, 0, 0);
    }

    public void SetTarget(string target)
    {
        int start = AppendLatin1(target);
        _target = new Range(start, _used - start, 0, 0);
    }

    public void AddHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        int nameStart = Append(name);
        int valueStart = Append(value);
        AddRange(new Range(nameStart, name.Length, valueStart, value.Length));
    }

    public void AddHeader(string name, string value)
    {
        int nameStart = AppendLatin1(name);
        int valueStart = AppendLatin1(value);
        AddRange(new Range(nameStart, valueStart - nameStart, valueStart, _used - valueStart));
    }

    private void AddRange(Range range)
    {
        if (HeaderCount == _headers.Length)
        {
            Array.Resize(ref _headers, _headers.Length * 2);
        }
        _headers[HeaderCount++] = range;
    }

    private int Append(ReadOnlySpan<byte> bytes)
    {
        Reserve(bytes.Length);
        int start = _used;
        bytes.CopyTo(_buffer.AsSpan(_used));
        _used += bytes.Length;
        return start;
    }

    private int AppendLatin1(string text)
    {
        Reserve(text.Length);
        int start = _used;
        // Engines hand us latin-1 decoded text, so each char is one byte; anything wider was not on the wire.
        _used += Encoding.Latin1.GetBytes(text, _buffer.AsSpan(_used));
        return start;
    }

    private void Reserve(int length)
    {
        if (_used + length > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _used + length));
        }
    }
}

/// <summary>
/// The status line and headers the application gave start_response, as latin-1 bytes,
/// already validated. Reused from request to request.
/// </summary>
public sealed class ResponseHead
{
    private byte[] _buffer = new byte[2048];
    private int _used;
    private (int NameStart, int NameLength, int ValueStart, int ValueLength)[] _headers = new (int, int, int, int)[16];
    private int _reasonStart;
    private int _reasonLength;

    public int StatusCode { get; private set; }
    public int HeaderCount { get; private set; }
    /// <summary>The Content-Length the application declared, or -1.</summary>
    public long ContentLength { get; private set; } = -1;

    public ReadOnlySpan<byte> Reason => _buffer.AsSpan(_reasonStart, _reasonLength);
    public ReadOnlySpan<byte> HeaderName(int index) => _buffer.AsSpan(_headers[index].NameStart, _headers[index].NameLength);
    public ReadOnlySpan<byte> HeaderValue(int index) => _buffer.AsSpan(_headers[index].ValueStart, _headers[index].ValueLength);

    public void Reset()
    {
        _used = 0;
        HeaderCount = 0;
        StatusCode = 0;
        _reasonLength = 0;
        ContentLength = -1;
    }

    public void SetStatus(int code, ReadOnlySpan<byte> reason)
    {
        StatusCode = code;
        _reasonStart = Append(reason);
        _reasonLength = reason.Length;
    }

    public void AddHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        int nameStart = Append(name);
        int valueStart = Append(value);
        if (HeaderCount == _headers.Length)
        {
            Array.Resize(ref _headers, _headers.Length * 2);
        }
        _headers[HeaderCount++] = (nameStart, name.Length, valueStart, value.Length);
    }

    public void SetContentLength(long length) => ContentLength = length;

    private int Append(ReadOnlySpan<byte> bytes)
    {
        if (_used + bytes.Length > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _used + bytes.Length));
        }
        int start = _used;
        bytes.CopyTo(_buffer.AsSpan(_used));
        _used += bytes.Length;
        return start;
    }
}
