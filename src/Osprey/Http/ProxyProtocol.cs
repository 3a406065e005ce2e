using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Text;
using Osprey.Wsgi;

namespace Osprey.Http;

public enum ProxyHeaderStatus
{
    /// <summary>The input so far is a prefix of a PROXY header: wait for more.</summary>
    NeedMore,
    /// <summary>The connection does not start with a PROXY header: it is plain HTTP.</summary>
    None,
    Parsed,
    /// <summary>A PROXY header that breaks the specification: the connection must be closed.</summary>
    Invalid,
}

/// <summary>
/// The connection's endpoints as the proxy saw them. Null endpoints (v2 LOCAL, v1 UNKNOWN,
/// v2 UNSPEC or UNIX addresses) mean: keep the real peer's.
/// </summary>
public readonly record struct ProxyHeader(IPEndPoint? Source, IPEndPoint? Destination);

/// <summary>
/// HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), as sent at the very start of a
/// connection by a load balancer that passes TCP through
/// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt). Pure and span-based, shared by
/// both engines; whether the peer may send one at all is the caller's decision.
/// </summary>
public static class ProxyProtocol
{
    /// <summary>The specification's bound for a v1 line, "PROXY" to CRLF included.</summary>
    public const int MaxV1Length = 107;

    /// <summary>
    /// Our bound for a whole v2 header (16 fixed bytes, addresses, TLVs). The format allows 64 KiB;
    /// real proxies send the 16 + 36 bytes of an IPv6 address block and a few small TLVs.
    /// </summary>
    public const int MaxV2Length = 4096;

    private const int V2FixedLength = 16;

    private static ReadOnlySpan<byte> V1Prefix => "PROXY "u8;
    private static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    /// <summary>
    /// Looks for a PROXY header at the start of <paramref name="data"/>. On
    /// <see cref="ProxyHeaderStatus.Parsed"/>, <paramref name="consumed"/> is its length; the
    /// HTTP request starts right after it.
    /// </summary>
    public static ProxyHeaderStatus TryParse(ReadOnlySpan<byte> data, out int consumed, out ProxyHeader header)
    {
        consumed = 0;
        header = default;
        if (data.IsEmpty)
        {
            return ProxyHeaderStatus.NeedMore;
        }
        if (data[0] == V1Prefix[0])
        {
            if (!StartsWithOrIsPrefixOf(data, V1Prefix))
            {
                return ProxyHeaderStatus.None;
            }
            return data.Length < V1Prefix.Length ? ProxyHeaderStatus.NeedMore : ParseV1(data, out consumed, out header);
        }
        if (data[0] == V2Signature[0])
        {
            if (!StartsWithOrIsPrefixOf(data, V2Signature))
            {
                return ProxyHeaderStatus.None;
            }
            return data.Length < V2FixedLength ? ProxyHeaderStatus.NeedMore : ParseV2(data, out consumed, out header);
        }
        return ProxyHeaderStatus.None;
    }

    /// <summary>The same over a pipe's buffer, copying at most <see cref="MaxV2Length"/> bytes only when the header spans segments.</summary>
    public static ProxyHeaderStatus TryParse(in ReadOnlySequence<byte> data, out int consumed, out ProxyHeader header)
    {
        if (data.IsSingleSegment)
        {
            return TryParse(data.FirstSpan, out consumed, out header);
        }
        Span<byte> copy = stackalloc byte[(int)Math.Min(data.Length, MaxV2Length)];
        data.Slice(0, copy.Length).CopyTo(copy);
        return TryParse(copy, out consumed, out header);
    }

    private static bool StartsWithOrIsPrefixOf(ReadOnlySpan<byte> data, ReadOnlySpan<byte> expected) =>
        data.Length >= expected.Length ? data.StartsWith(expected) : expected.StartsWith(data);

    // ---------------------------------------------------------------- v1: "PROXY TCP4 src dst sport dport\r\n"

    private static ProxyHeaderStatus ParseV1(ReadOnlySpan<byte> data, out int consumed, out ProxyHeader header)
    {
        consumed = 0;
        header = default;
        ReadOnlySpan<byte> window = data[..Math.Min(data.Length, MaxV1Length)];
        int lineEnd = window.IndexOf("\r\n"u8);
        if (lineEnd < 0)
        {
            // A bare LF, or no CRLF within the bound, can never become a valid line.
            return window.IndexOf((byte)'\n') >= 0 || data.Length >= MaxV1Length ? ProxyHeaderStatus.Invalid : ProxyHeaderStatus.NeedMore;
        }
        ReadOnlySpan<byte> line = window[V1Prefix.Length..lineEnd];
        consumed = lineEnd + 2;
        if (line.StartsWith("UNKNOWN"u8) && (line.Length == 7 || line[7] == ' '))
        {
            // The proxy could not tell (or the connection is not TCP): the rest of the line is to be ignored.
            return ProxyHeaderStatus.Parsed;
        }
        Span<Range> fields = stackalloc Range[5];
        int count = 0;
        foreach (Range field in line.Split((byte)' '))
        {
            if (count == fields.Length)
            {
                return ProxyHeaderStatus.Invalid;
            }
            fields[count++] = field;
        }
        if (count != fields.Length)
        {
            return ProxyHeaderStatus.Invalid;
        }
        ReadOnlySpan<byte> protocol = line[fields[0]];
        bool v4 = protocol.SequenceEqual("TCP4"u8);
        if (!v4 && !protocol.SequenceEqual("TCP6"u8))
        {
            return ProxyHeaderStatus.Invalid;
        }
        if (!TryParseAddress(line[fields[1]], v4, out IPAddress? source) ||
            !TryParseAddress(line[fields[2]], v4, out IPAddress? destination) ||
            !TryParsePort(line[fields[3]], out int sourcePort) ||
            !TryParsePort(line[fields[4]], out int destinationPort))
        {
            return ProxyHeaderStatus.Invalid;
        }
        header = new ProxyHeader(new IPEndPoint(source, sourcePort), new IPEndPoint(destination, destinationPort));
        return ProxyHeaderStatus.Parsed;
    }

    private static bool TryParseAddress(ReadOnlySpan<byte> text, bool v4, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address)
    {
        address = null;
        if (text.IsEmpty || text.Length > 45 || !Ascii.IsValid(text) || (text.IndexOf((byte)':') >= 0) == v4)
        {
            return false;
        }
        Span<char> chars = stackalloc char[45];
        int length = Encoding.ASCII.GetChars(text, chars);
        return TrustedProxies.TryParseAddress(chars[..length], out address);
    }

    /// <summary>Decimal 0-65535, no sign, no leading zero (the specification's form).</summary>
    private static bool TryParsePort(ReadOnlySpan<byte> text, out int port)
    {
        port = 0;
        if (text.IsEmpty || text.Length > 5 || (text.Length > 1 && text[0] == '0'))
        {
            return false;
        }
        foreach (byte b in text)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }
            port = port * 10 + (b - '0');
        }
        return port <= 65535;
    }

    // ---------------------------------------------------------------- v2: signature, ver/cmd, family, length, addresses, TLVs

    private static ProxyHeaderStatus ParseV2(ReadOnlySpan<byte> data, out int consumed, out ProxyHeader header)
    {
        consumed = 0;
        header = default;
        byte versionAndCommand = data[12];
        byte familyAndTransport = data[13];
        int length = V2FixedLength + BinaryPrimitives.ReadUInt16BigEndian(data[14..]);
        if (versionAndCommand >> 4 != 2 || length > MaxV2Length)
        {
            return ProxyHeaderStatus.Invalid;
        }
        int command = versionAndCommand & 0x0F;
        int family = familyAndTransport >> 4;
        int transport = familyAndTransport & 0x0F;
        if (command > 1 || family > 3 || transport > 2)
        {
            return ProxyHeaderStatus.Invalid;
        }
        if (data.Length < length)
        {
            return ProxyHeaderStatus.NeedMore;
        }
        consumed = length;
        ReadOnlySpan<byte> addresses = data[V2FixedLength..length];
        // LOCAL: the proxy's own connection (a health check); UNSPEC and UNIX: nothing we can use as an IP peer.
        if (command == 0 || family is 0 or 3)
        {
            if (family == 3 && command == 1 && addresses.Length < 216)
            {
                return ProxyHeaderStatus.Invalid;
            }
            return ProxyHeaderStatus.Parsed;
        }
        int addressSize = family == 1 ? 4 : 16;
        if (addresses.Length < 2 * addressSize + 4)
        {
            return ProxyHeaderStatus.Invalid;
        }
        var source = new IPAddress(addresses[..addressSize]);
        var destination = new IPAddress(addresses[addressSize..(2 * addressSize)]);
        int sourcePort = BinaryPrimitives.ReadUInt16BigEndian(addresses[(2 * addressSize)..]);
        int destinationPort = BinaryPrimitives.ReadUInt16BigEndian(addresses[(2 * addressSize + 2)..]);
        header = new ProxyHeader(new IPEndPoint(source, sourcePort), new IPEndPoint(destination, destinationPort));
        return ProxyHeaderStatus.Parsed;
    }
}
