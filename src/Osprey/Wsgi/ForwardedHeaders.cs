using System.Net;
using System.Text;

namespace Osprey.Wsgi;

/// <summary>What a trusted proxy chain says about the request as the client sent it. Unset parts are left as the connection says.</summary>
internal ref struct ForwardedRequest
{
    public IPAddress? ClientAddress;
    /// <summary>The client's port when the proxy gave one, else -1.</summary>
    public int ClientPort;
    /// <summary>"http" or "https", or null.</summary>
    public string? Scheme;
    /// <summary>The Host the client sent, validated as <c>host[:port]</c>; empty when not given.</summary>
    public ReadOnlySpan<byte> Host;
}

/// <summary>
/// Reads X-Forwarded-For/-Proto/-Host (and -Ssl, -Protocol) and RFC 7239 Forwarded, for a request whose peer is a
/// trusted proxy. The client is the right-most hop that is not itself a trusted proxy: entries
/// to its left were written by the client or by proxies nobody vouches for, so they are never
/// read (a client cannot spoof its address by prepending to the list). Every value is
/// validated; whatever is malformed is ignored and leaves the environ as the connection says.
/// Pure and span-based: only the client's address is allocated.
/// </summary>
internal static class ForwardedHeaders
{
    /// <summary>Longer proxy chains than this are treated as malformed (the lists are bounded by the header size limit anyway).</summary>
    internal const int MaxHops = 64;

    internal struct Element
    {
        public int ForStart, ForLength, ProtoStart, ProtoLength, HostStart, HostLength;
    }

    /// <summary>
    /// Empty spans stand for absent headers. <see cref="ForwardedRequest.Scheme"/> and
    /// <see cref="ForwardedRequest.Host"/> come from the same hop as the client address:
    /// Forwarded's chosen element, or in X-Forwarded-Proto/-Host the entry as far from the right
    /// as the chosen X-Forwarded-For entry (the left-most if the list is shorter). Forwarded wins
    /// for each part it gives.
    /// </summary>
    public static ForwardedRequest Resolve(ReadOnlySpan<byte> forwarded, ReadOnlySpan<byte> forwardedFor,
        ReadOnlySpan<byte> forwardedProto, ReadOnlySpan<byte> forwardedHost, TrustedProxies trusted)
    {
        var result = new ForwardedRequest { ClientPort = -1 };
        if (!forwarded.IsEmpty)
        {
            ResolveForwarded(forwarded, trusted, ref result);
        }
        int hops = 0;
        if (!forwardedFor.IsEmpty && WalkForwardedFor(forwardedFor, trusted, out hops, out IPAddress? address, out int port) && result.ClientAddress is null)
        {
            result.ClientAddress = address;
            result.ClientPort = port;
        }
        if (result.Scheme is null && !forwardedProto.IsEmpty)
        {
            result.Scheme = ParseScheme(EntryFromRight(forwardedProto, hops));
        }
        if (result.Host.IsEmpty && !forwardedHost.IsEmpty)
        {
            ReadOnlySpan<byte> host = EntryFromRight(forwardedHost, hops);
            if (IsValidHost(host))
            {
                result.Host = host;
            }
        }
        return result;
    }

    // ------------------------------------------------------------------ X-Forwarded-*

    /// <summary>
    /// Walks X-Forwarded-For from the right past trusted proxies. <paramref name="hops"/> is how
    /// many entries were passed. False if the chosen entry is not an address (unknown, garbage,
    /// an empty entry) or the chain is too long: REMOTE_ADDR then stays as it is.
    /// </summary>
    internal static bool WalkForwardedFor(ReadOnlySpan<byte> value, TrustedProxies trusted, out int hops, out IPAddress? address, out int port)
    {
        hops = 0;
        address = null;
        port = -1;
        ReadOnlySpan<byte> rest = value;
        while (true)
        {
            int comma = rest.LastIndexOf((byte)',');
            ReadOnlySpan<byte> entry = Trim(rest[(comma + 1)..]);
            if (!ParseNode(entry, allowBareIpv6: true, out address, out port))
            {
                address = null;
                return false;
            }
            if (comma < 0 || !trusted.Contains(address))
            {
                return true;
            }
            if (++hops >= MaxHops)
            {
                address = null;
                return false;
            }
            rest = rest[..comma];
        }
    }

    /// <summary>The list entry <paramref name="fromRight"/> places from the right (0 = right-most), or the left-most if there are fewer.</summary>
    internal static ReadOnlySpan<byte> EntryFromRight(ReadOnlySpan<byte> list, int fromRight)
    {
        while (true)
        {
            int comma = list.LastIndexOf((byte)',');
            if (comma < 0 || fromRight == 0)
            {
                return Trim(list[(comma + 1)..]);
            }
            list = list[..comma];
            fromRight--;
        }
    }

    /// <summary>
    /// gunicorn's other secure_scheme_headers, read when neither Forwarded nor X-Forwarded-Proto gave a
    /// scheme: <c>X-Forwarded-Ssl: on</c> and <c>X-Forwarded-Protocol: ssl</c> mean https, any other value
    /// http (as gunicorn reads them); null when neither header is present.
    /// </summary>
    internal static string? SchemeFromSecureFlags(ReadOnlySpan<byte> forwardedSsl, ReadOnlySpan<byte> forwardedProtocol)
    {
        if (!forwardedSsl.IsEmpty)
        {
            return Ascii.EqualsIgnoreCase(forwardedSsl[Ascii.Trim(forwardedSsl)], "on"u8) ? "https" : "http";
        }
        if (!forwardedProtocol.IsEmpty)
        {
            return Ascii.EqualsIgnoreCase(forwardedProtocol[Ascii.Trim(forwardedProtocol)], "ssl"u8) ? "https" : "http";
        }
        return null;
    }

    internal static string? ParseScheme(ReadOnlySpan<byte> value)
    {
        if (Ascii.EqualsIgnoreCase(value, "https"u8))
        {
            return "https";
        }
        if (Ascii.EqualsIgnoreCase(value, "http"u8))
        {
            return "http";
        }
        return null;
    }

    // ------------------------------------------------------------------ RFC 7239 Forwarded

    private static void ResolveForwarded(ReadOnlySpan<byte> value, TrustedProxies trusted, ref ForwardedRequest result)
    {
        Span<Element> elements = stackalloc Element[MaxHops];
        int count = ParseForwarded(value, elements);
        if (count <= 0)
        {
            return;
        }
        int chosen = count - 1;
        IPAddress? address = null;
        int port = -1;
        while (true)
        {
            Element e = elements[chosen];
            bool isAddress = e.ForStart >= 0 && ParseNode(value.Slice(e.ForStart, e.ForLength), allowBareIpv6: false, out address, out port);
            if (!isAddress)
            {
                address = null;
                port = -1;
            }
            if (chosen == 0 || address is null || !trusted.Contains(address))
            {
                break;
            }
            chosen--;
        }
        Element hop = elements[chosen];
        if (address is not null)
        {
            result.ClientAddress = address;
            result.ClientPort = port;
        }
        if (hop.ProtoStart >= 0)
        {
            result.Scheme = ParseScheme(value.Slice(hop.ProtoStart, hop.ProtoLength));
        }
        if (hop.HostStart >= 0 && IsValidHost(value.Slice(hop.HostStart, hop.HostLength)))
        {
            result.Host = value.Slice(hop.HostStart, hop.HostLength);
        }
    }

    /// <summary>
    /// Splits a Forwarded value into elements and their for/proto/host values (quotes removed).
    /// The element count, or -1 if the value is malformed: bad syntax, a parameter twice in one
    /// element, an escaped quoted-string (no legitimate for/proto/host needs one), too many hops.
    /// </summary>
    internal static int ParseForwarded(ReadOnlySpan<byte> value, Span<Element> elements)
    {
        int count = 0;
        int i = SkipOws(value, 0);
        while (i < value.Length)
        {
            if (value[i] == ',')
            {
                // Empty list elements are allowed (RFC 9110 §5.6.1).
                i = SkipOws(value, i + 1);
                continue;
            }
            if (count == elements.Length)
            {
                return -1;
            }
            var element = new Element { ForStart = -1, ProtoStart = -1, HostStart = -1 };
            while (true)
            {
                int nameStart = i;
                while (i < value.Length && HttpToken.IsTokenChar(value[i]))
                {
                    i++;
                }
                ReadOnlySpan<byte> name = value[nameStart..i];
                if (name.IsEmpty || i >= value.Length || value[i] != '=')
                {
                    return -1;
                }
                i++;
                int valueStart;
                int valueLength;
                if (i < value.Length && value[i] == '"')
                {
                    valueStart = ++i;
                    while (i < value.Length && value[i] != '"')
                    {
                        byte b = value[i];
                        if (b == '\\' || (b < 0x20 && b != '\t') || b == 0x7F)
                        {
                            return -1;
                        }
                        i++;
                    }
                    if (i >= value.Length)
                    {
                        return -1;
                    }
                    valueLength = i - valueStart;
                    i++;
                }
                else
                {
                    valueStart = i;
                    while (i < value.Length && HttpToken.IsTokenChar(value[i]))
                    {
                        i++;
                    }
                    valueLength = i - valueStart;
                    if (valueLength == 0)
                    {
                        return -1;
                    }
                }
                if (Ascii.EqualsIgnoreCase(name, "for"u8))
                {
                    if (element.ForStart >= 0)
                    {
                        return -1;
                    }
                    (element.ForStart, element.ForLength) = (valueStart, valueLength);
                }
                else if (Ascii.EqualsIgnoreCase(name, "proto"u8))
                {
                    if (element.ProtoStart >= 0)
                    {
                        return -1;
                    }
                    (element.ProtoStart, element.ProtoLength) = (valueStart, valueLength);
                }
                else if (Ascii.EqualsIgnoreCase(name, "host"u8))
                {
                    if (element.HostStart >= 0)
                    {
                        return -1;
                    }
                    (element.HostStart, element.HostLength) = (valueStart, valueLength);
                }
                i = SkipOws(value, i);
                if (i < value.Length && value[i] == ';')
                {
                    i = SkipOws(value, i + 1);
                    continue;
                }
                break;
            }
            elements[count++] = element;
            if (i < value.Length)
            {
                if (value[i] != ',')
                {
                    return -1;
                }
                i = SkipOws(value, i + 1);
            }
        }
        return count;
    }

    // ------------------------------------------------------------------ nodes and hosts

    /// <summary>
    /// A node: <c>1.2.3.4</c>, <c>1.2.3.4:80</c>, <c>[2001:db8::1]</c>, <c>[2001:db8::1]:80</c>, and in
    /// X-Forwarded-For also a bare <c>2001:db8::1</c>. An obfuscated port (<c>_abc</c>) counts as none.
    /// False for anything else, RFC 7239's <c>unknown</c> and obfuscated identifiers included.
    /// </summary>
    internal static bool ParseNode(ReadOnlySpan<byte> node, bool allowBareIpv6, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address, out int port)
    {
        address = null;
        port = -1;
        ReadOnlySpan<byte> host;
        ReadOnlySpan<byte> portText = default;
        bool hasPort = false;
        if (node.Length > 0 && node[0] == '[')
        {
            int close = node.IndexOf((byte)']');
            if (close < 0)
            {
                return false;
            }
            host = node[1..close];
            ReadOnlySpan<byte> after = node[(close + 1)..];
            if (!after.IsEmpty)
            {
                if (after[0] != ':')
                {
                    return false;
                }
                portText = after[1..];
                hasPort = true;
            }
            if (host.IndexOf((byte)':') < 0)
            {
                return false;
            }
        }
        else
        {
            int colon = node.IndexOf((byte)':');
            if (colon >= 0 && node.LastIndexOf((byte)':') != colon)
            {
                if (!allowBareIpv6)
                {
                    return false;
                }
                host = node;
            }
            else if (colon >= 0)
            {
                host = node[..colon];
                portText = node[(colon + 1)..];
                hasPort = true;
                if (host.IndexOf((byte)'.') < 0)
                {
                    return false;
                }
            }
            else
            {
                host = node;
            }
        }
        if (hasPort && !TryParsePort(portText, out port))
        {
            if (portText.Length < 2 || portText[0] != '_')
            {
                return false;
            }
            port = -1;
        }
        if (host.IsEmpty || host.Length > 45 || !Ascii.IsValid(host))
        {
            return false;
        }
        Span<char> chars = stackalloc char[45];
        int length = Encoding.ASCII.GetChars(host, chars);
        return TrustedProxies.TryParseAddress(chars[..length], out address);
    }

    /// <summary><c>host[:port]</c> as a Host header may carry it: a registered name or IPv4 address, or a bracketed IPv6 address.</summary>
    internal static bool IsValidHost(ReadOnlySpan<byte> host)
    {
        if (host.IsEmpty || host.Length > 261)
        {
            return false;
        }
        ReadOnlySpan<byte> portText = default;
        bool hasPort = false;
        if (host[0] == '[')
        {
            int close = host.IndexOf((byte)']');
            if (close < 0 || !ParseNode(host[..(close + 1)], allowBareIpv6: false, out _, out _))
            {
                return false;
            }
            if (close + 1 < host.Length)
            {
                if (host[close + 1] != ':')
                {
                    return false;
                }
                portText = host[(close + 2)..];
                hasPort = true;
            }
        }
        else
        {
            int colon = host.IndexOf((byte)':');
            ReadOnlySpan<byte> name = colon < 0 ? host : host[..colon];
            if (colon >= 0)
            {
                portText = host[(colon + 1)..];
                hasPort = true;
            }
            if (name.IsEmpty || name.Length > 255)
            {
                return false;
            }
            foreach (byte b in name)
            {
                if (!(char.IsAsciiLetterOrDigit((char)b) || b is (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~'))
                {
                    return false;
                }
            }
        }
        return !hasPort || TryParsePort(portText, out _);
    }

    private static bool TryParsePort(ReadOnlySpan<byte> text, out int port)
    {
        port = 0;
        if (text.IsEmpty || text.Length > 5)
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

    private static ReadOnlySpan<byte> Trim(ReadOnlySpan<byte> value) => value.Trim(" \t"u8);

    private static int SkipOws(ReadOnlySpan<byte> value, int i)
    {
        while (i < value.Length && (value[i] == ' ' || value[i] == '\t'))
        {
            i++;
        }
        return i;
    }
}
