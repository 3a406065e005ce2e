using System.Buffers.Text;
using System.Globalization;
using System.Text;

namespace Osprey.Wsgi;

/// <summary>What one access-log line is made from.</summary>
internal readonly ref struct AccessLogEntry(RequestHead request, ResponseHead response, int status, long bytesSent, TimeSpan elapsed, DateTimeOffset time)
{
    public RequestHead Request { get; } = request;
    public ResponseHead Response { get; } = response;
    public int Status { get; } = status;
    public long BytesSent { get; } = bytesSent;
    public TimeSpan Elapsed { get; } = elapsed;
    public DateTimeOffset Time { get; } = time;
}

/// <summary>
/// gunicorn's <c>--access-logformat</c>: Python %-formatting over named atoms, <c>%(h)s</c>,
/// <c>%({x-request-id}i)s</c> and the like, parsed once at start into literal text and atoms.
/// </summary>
public sealed class AccessLogFormat
{
    /// <summary>gunicorn's default (its "combined" format).</summary>
    public const string GunicornDefault = "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"";

    public static AccessLogFormat Default { get; } = Parse(GunicornDefault, out _)!;

    private enum Kind { Literal, Atom, RequestHeader, ResponseHeader, Environment }

    private readonly record struct Segment(Kind Kind, string Text, char Atom, int Width, bool LeftAlign);

    private readonly Segment[] _segments;

    private AccessLogFormat(string text, Segment[] segments)
    {
        Text = text;
        _segments = segments;
    }

    public string Text { get; }

    /// <summary>The format, or null with a one-line <paramref name="error"/> (the text Python's % would refuse).</summary>
    public static AccessLogFormat? Parse(string text, out string? error)
    {
        error = null;
        var segments = new List<Segment>();
        var literal = new StringBuilder();
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            if (c != '%')
            {
                literal.Append(c);
                i++;
                continue;
            }
            if (i + 1 < text.Length && text[i + 1] == '%')
            {
                literal.Append('%');
                i += 2;
                continue;
            }
            if (i + 1 >= text.Length || text[i + 1] != '(')
            {
                error = $"'%' at position {i} is not followed by (NAME): write %(NAME)s, or %% for a percent sign";
                return null;
            }
            int close = text.IndexOf(')', i + 2);
            if (close < 0)
            {
                error = $"'%(' at position {i} has no closing ')'";
                return null;
            }
            string name = text[(i + 2)..close];
            int j = close + 1;
            bool left = false;
            while (j < text.Length && text[j] is '-' or '0' or ' ' or '+' or '#')
            {
                left |= text[j] == '-';
                j++;
            }
            int width = 0;
            while (j < text.Length && char.IsAsciiDigit(text[j]) && width < 1000)
            {
                width = width * 10 + (text[j] - '0');
                j++;
            }
            if (j >= text.Length || text[j] is not ('s' or 'd' or 'r' or 'i'))
            {
                error = $"'%({name})' at position {i} needs a conversion: s (or d)";
                return null;
            }
            if (literal.Length > 0)
            {
                segments.Add(new Segment(Kind.Literal, literal.ToString(), '\0', 0, false));
                literal.Clear();
            }
            segments.Add(Atom(name, width, left));
            i = j + 1;
        }
        if (literal.Length > 0)
        {
            segments.Add(new Segment(Kind.Literal, literal.ToString(), '\0', 0, false));
        }
        return new AccessLogFormat(text, segments.ToArray());
    }

    private static Segment Atom(string name, int width, bool left)
    {
        if (name.Length > 2 && name[0] == '{')
        {
            int end = name.IndexOf('}', StringComparison.Ordinal);
            if (end > 1 && end == name.Length - 2)
            {
                string inner = name[1..end];
                switch (name[^1])
                {
                    case 'i':
                        return new Segment(Kind.RequestHeader, inner, '\0', width, left);
                    case 'o':
                        return new Segment(Kind.ResponseHeader, inner, '\0', width, left);
                    case 'e':
                        return new Segment(Kind.Environment, inner, '\0', width, left);
                }
            }
        }
        // Names gunicorn does not know print '-', as its SafeAtoms do.
        char atom = name.Length == 1 && "hlutrmUqHsBbfaTMDLp".Contains(name[0], StringComparison.Ordinal) ? name[0] : '?';
        return new Segment(Kind.Atom, name, atom, width, left);
    }

    /// <summary>Appends the line for <paramref name="entry"/>, without its newline.</summary>
    internal void Append(StringBuilder line, in AccessLogEntry entry)
    {
        foreach (Segment segment in _segments)
        {
            if (segment.Kind == Kind.Literal)
            {
                line.Append(segment.Text);
                continue;
            }
            int start = line.Length;
            switch (segment.Kind)
            {
                case Kind.Atom:
                    AppendAtom(line, segment.Atom, entry);
                    break;
                case Kind.RequestHeader:
                    AppendHeader(line, segment.Text, entry.Request);
                    break;
                case Kind.ResponseHeader:
                    AppendHeader(line, segment.Text, entry.Response);
                    break;
                case Kind.Environment:
                    line.Append(Environment.GetEnvironmentVariable(segment.Text) ?? "-");
                    break;
            }
            int written = line.Length - start;
            if (written < segment.Width)
            {
                line.Insert(segment.LeftAlign ? line.Length : start, " ", segment.Width - written);
            }
        }
    }

    private static void AppendHeader(StringBuilder line, string name, RequestHead request)
    {
        for (int i = 0; i < request.HeaderCount; i++)
        {
            if (Ascii.EqualsIgnoreCase(request.HeaderName(i), name))
            {
                AppendLatin1(line, request.HeaderValue(i));
                return;
            }
        }
        line.Append('-');
    }

    private static void AppendHeader(StringBuilder line, string name, ResponseHead response)
    {
        for (int i = 0; i < response.HeaderCount; i++)
        {
            if (Ascii.EqualsIgnoreCase(response.HeaderName(i), name))
            {
                AppendLatin1(line, response.HeaderValue(i));
                return;
            }
        }
        line.Append('-');
    }

    private static void AppendAtom(StringBuilder line, char atom, in AccessLogEntry entry)
    {
        RequestHead request = entry.Request;
        switch (atom)
        {
            case 'h':
                line.Append(request.RemoteAddress.Length > 0 ? request.RemoteAddress : "-");
                break;
            case 'u':
                line.Append(BasicUser(request) ?? "-");
                break;
            case 't':
                line.Append('[').Append(entry.Time.ToString("dd/MMM/yyyy:HH:mm:ss ", CultureInfo.InvariantCulture))
                    .Append(Logging.Log.UtcOffset(entry.Time)).Append(']');
                break;
            case 'r':
                line.Append(request.Method).Append(' ');
                AppendLatin1(line, request.Target);
                line.Append(' ').Append(Protocol(request));
                break;
            case 'm':
                line.Append(request.Method);
                break;
            case 'U':
            {
                ReadOnlySpan<byte> target = request.Target;
                int query = target.IndexOf((byte)'?');
                AppendLatin1(line, query < 0 ? target : target[..query]);
                break;
            }
            case 'q':
            {
                ReadOnlySpan<byte> target = request.Target;
                int query = target.IndexOf((byte)'?');
                AppendLatin1(line, query < 0 ? [] : target[(query + 1)..]);
                break;
            }
            case 'H':
                line.Append(Protocol(request));
                break;
            case 's':
                line.Append(entry.Status);
                break;
            case 'B':
                line.Append(entry.BytesSent);
                break;
            case 'b':
                if (entry.BytesSent > 0)
                {
                    line.Append(entry.BytesSent);
                }
                else
                {
                    line.Append('-');
                }
                break;
            case 'f':
                AppendHeader(line, "referer", request);
                break;
            case 'a':
                AppendHeader(line, "user-agent", request);
                break;
            case 'T':
                line.Append((long)entry.Elapsed.TotalSeconds);
                break;
            case 'M':
                line.Append((long)entry.Elapsed.TotalMilliseconds);
                break;
            case 'D':
                line.Append((long)entry.Elapsed.TotalMicroseconds);
                break;
            case 'L':
                line.Append(entry.Elapsed.TotalSeconds.ToString("0.000000", CultureInfo.InvariantCulture));
                break;
            case 'p':
                line.Append('<').Append(Environment.ProcessId).Append('>');
                break;
            default:
                // 'l' (identd, never known) and names gunicorn does not have.
                line.Append('-');
                break;
        }
    }

    private static string Protocol(RequestHead request) => request.Version switch
    {
        HttpVersion.Http10 => "HTTP/1.0",
        HttpVersion.Http2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };

    /// <summary>The user name of a Basic Authorization header, as gunicorn logs it.</summary>
    private static string? BasicUser(RequestHead request)
    {
        for (int i = 0; i < request.HeaderCount; i++)
        {
            if (!Ascii.EqualsIgnoreCase(request.HeaderName(i), "authorization"u8))
            {
                continue;
            }
            ReadOnlySpan<byte> value = request.HeaderValue(i).Trim((byte)' ');
            if (value.Length <= 6 || !Ascii.EqualsIgnoreCase(value[..6], "basic "u8))
            {
                return null;
            }
            ReadOnlySpan<byte> encoded = value[6..].Trim((byte)' ');
            byte[] decoded = new byte[Base64.GetMaxDecodedFromUtf8Length(encoded.Length)];
            if (Base64.DecodeFromUtf8(encoded, decoded, out _, out int written) != System.Buffers.OperationStatus.Done)
            {
                return null;
            }
            ReadOnlySpan<byte> credentials = decoded.AsSpan(0, written);
            int colon = credentials.IndexOf((byte)':');
            return colon < 0 ? null : Encoding.UTF8.GetString(credentials[..colon]);
        }
        return null;
    }

    private static void AppendLatin1(StringBuilder line, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            line.Append((char)b);
        }
    }
}
