using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Osprey.Logging;

/// <summary>Where StatsD metrics go (<c>--statsd-host</c>): HOST:PORT over UDP, or unix:PATH (a datagram socket).</summary>
public sealed record StatsdAddress(string? Host, int Port, string? UnixPath)
{
    public static StatsdAddress? Parse(string text, out string? error)
    {
        error = null;
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text["unix:".Length..];
            if (path.StartsWith("//", StringComparison.Ordinal))
            {
                path = path[2..];
            }
            if (path.Length == 0)
            {
                error = $"'{text}' names no socket path";
                return null;
            }
            return new StatsdAddress(null, 0, path);
        }
        int colon = text.LastIndexOf(':');
        string host = colon < 0 ? text : text[..colon];
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        if (colon <= 0 || host.Length == 0
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port)
            || port is < 1 or > 65535)
        {
            error = $"'{text}' is not HOST:PORT or unix:PATH";
            return null;
        }
        return new StatsdAddress(host, port, null);
    }
}

/// <summary>
/// gunicorn's StatsD metrics, with its names: per request <c>gunicorn.requests</c>,
/// <c>gunicorn.request.status.CODE</c> and <c>gunicorn.request.duration</c> (ms); from the master
/// <c>gunicorn.workers</c>; per log line at warning and above <c>gunicorn.log.LEVEL</c>. A request's
/// three metrics go in one datagram, one per line (as StatsD and DogStatsD accept), where gunicorn
/// sends three. Sending never blocks and never fails a request: a full buffer or an absent
/// collector only loses metrics, as UDP does.
/// </summary>
public sealed class Statsd : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _prefix;
    private readonly byte[] _tags;
    private readonly Lock _lock = new();
    private readonly byte[] _buffer;

    /// <summary>The process's metrics, if --statsd-host is set; log lines at warning and above count there.</summary>
    public static Statsd? Current { get; private set; }

    private Statsd(Socket socket, string prefix, string tags)
    {
        _socket = socket;
        // gunicorn's normalisation: a non-empty prefix ends in exactly one dot.
        string trimmed = prefix.TrimEnd('.');
        _prefix = Encoding.ASCII.GetBytes(trimmed.Length == 0 ? "" : trimmed + ".");
        _tags = Encoding.ASCII.GetBytes(tags.Length == 0 ? "" : "|#" + tags);
        // A request's three lines: each a name of at most 32 bytes, a number and a type.
        _buffer = new byte[3 * (_prefix.Length + _tags.Length + 96)];
    }

    /// <summary>
    /// Opens the socket and makes it <see cref="Current"/>; null without <paramref name="address"/>
    /// (no --statsd-host), or with a warning logged if it cannot be opened.
    /// </summary>
    public static Statsd? Start(string? address, string prefix, string tags)
    {
        if (address is null)
        {
            return null;
        }
        StatsdAddress? parsed = StatsdAddress.Parse(address, out string? error);
        Socket? socket = null;
        try
        {
            if (parsed is null)
            {
                throw new SocketException((int)SocketError.InvalidArgument, error);
            }
            if (parsed.UnixPath is string path)
            {
                socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
                socket.Connect(new UnixDomainSocketEndPoint(path));
            }
            else
            {
                IPAddress ip = IPAddress.TryParse(parsed.Host, out IPAddress? literal) ? literal : Dns.GetHostAddresses(parsed.Host!)[0];
                socket = new Socket(ip.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
                socket.Connect(new IPEndPoint(ip, parsed.Port));
            }
            socket.Blocking = false;
        }
        catch (Exception e) when (e is SocketException or IndexOutOfRangeException)
        {
            socket?.Dispose();
            Log.Warning($"--statsd-host {address}: {e.Message}; no metrics are sent");
            return null;
        }
        var statsd = new Statsd(socket, prefix, tags);
        Current = statsd;
        return statsd;
    }

    /// <summary>One request's metrics, as gunicorn's access hook sends them.</summary>
    public void Request(int status, double durationMs)
    {
        lock (_lock)
        {
            Span<byte> b = _buffer;
            int n = Metric(b, "gunicorn.request.duration"u8, default, durationMs, "|ms"u8);
            b[n++] = (byte)'\n';
            n += Metric(b[n..], "gunicorn.requests"u8, default, 1, "|c|@1.0"u8);
            b[n++] = (byte)'\n';
            n += Metric(b[n..], "gunicorn.request.status."u8, status, 1, "|c|@1.0"u8);
            Send(b[..n]);
        }
    }

    /// <summary>A counter, +1 (the log counters).</summary>
    public void Increment(ReadOnlySpan<byte> name)
    {
        lock (_lock)
        {
            Send(_buffer.AsSpan(0, Metric(_buffer, name, default, 1, "|c|@1.0"u8)));
        }
    }

    public void Gauge(ReadOnlySpan<byte> name, long value)
    {
        lock (_lock)
        {
            Send(_buffer.AsSpan(0, Metric(_buffer, name, default, value, "|g"u8)));
        }
    }

    /// <summary>PREFIX NAME[SUFFIX]:VALUE TYPE [|#TAGS] into <paramref name="b"/>; returns its length.</summary>
    private int Metric(Span<byte> b, ReadOnlySpan<byte> name, int? nameSuffix, double value, ReadOnlySpan<byte> type)
    {
        int n = 0;
        _prefix.CopyTo(b);
        n += _prefix.Length;
        name.CopyTo(b[n..]);
        n += name.Length;
        if (nameSuffix is int suffix)
        {
            Utf8Formatter.TryFormat(suffix, b[n..], out int written);
            n += written;
        }
        b[n++] = (byte)':';
        if (value == Math.Floor(value) && Math.Abs(value) < 1e15)
        {
            Utf8Formatter.TryFormat((long)value, b[n..], out int written);
            n += written;
        }
        else
        {
            Utf8Formatter.TryFormat(value, b[n..], out int written, new StandardFormat('F', 3));
            n += written;
        }
        type.CopyTo(b[n..]);
        n += type.Length;
        _tags.CopyTo(b[n..]);
        return n + _tags.Length;
    }

    private void Send(ReadOnlySpan<byte> datagram)
    {
        try
        {
            _socket.Send(datagram, SocketFlags.None);
        }
        catch (SocketException)
        {
            // No collector listening (ICMP refused), or the buffer is full: the metric is lost, as with UDP.
        }
    }

    public void Dispose()
    {
        if (Current == this)
        {
            Current = null;
        }
        _socket.Dispose();
    }
}
