using System.Net;
using System.Net.Sockets;

namespace Osprey.Wsgi;

/// <summary>
/// The peers whose X-Forwarded-*, Forwarded and PROXY protocol headers are believed
/// (<c>--forwarded-allow-ips</c>): addresses and CIDR networks, or <c>*</c> for every peer.
/// Immutable, so engines and the environ builder share one instance across threads.
/// </summary>
public sealed class TrustedProxies
{
    public const string DefaultText = "127.0.0.1,::1";

    private readonly IPNetwork[] _networks;

    private TrustedProxies(IPNetwork[] networks, bool any, string text)
    {
        _networks = networks;
        AllowsAny = any;
        Text = text;
    }

    public static TrustedProxies Default { get; } = Parse(DefaultText, out _)!;

    /// <summary>Nobody is trusted; proxy headers always pass through untouched.</summary>
    public static TrustedProxies None { get; } = new([], false, "");

    /// <summary><c>*</c> was given: every peer is trusted.</summary>
    public bool AllowsAny { get; }

    /// <summary>The list as given, for messages.</summary>
    public string Text { get; }

    /// <summary>Parses gunicorn's comma-separated list; null and a one-line <paramref name="error"/> if an entry is not an address or network.</summary>
    public static TrustedProxies? Parse(string text, out string? error)
    {
        error = null;
        var networks = new List<IPNetwork>();
        bool any = false;
        foreach (string part in text.Split(','))
        {
            string entry = part.Trim();
            if (entry.Length == 0)
            {
                continue;
            }
            if (entry == "*")
            {
                any = true;
                continue;
            }
            int slash = entry.IndexOf('/', StringComparison.Ordinal);
            if (slash < 0)
            {
                if (!TryParseAddress(entry, out IPAddress? address))
                {
                    error = $"'{entry}' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8 or *)";
                    return null;
                }
                networks.Add(new IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128));
                continue;
            }
            if (!TryParseAddress(entry.AsSpan(0, slash), out IPAddress? prefix) ||
                !int.TryParse(entry.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int length) ||
                length > (prefix.AddressFamily == AddressFamily.InterNetwork ? 32 : 128))
            {
                error = $"'{entry}' is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)";
                return null;
            }
            IPAddress masked = Masked(prefix, length);
            if (!masked.Equals(prefix))
            {
                // Host bits after the prefix are most likely a typo, which would silently trust the wrong range.
                error = $"'{entry}' has bits set after the /{length} prefix (did you mean {masked}/{length}?)";
                return null;
            }
            networks.Add(new IPNetwork(prefix, length));
        }
        return new TrustedProxies([.. networks], any, text);
    }

    /// <summary>Whether <paramref name="address"/> is trusted; IPv4-mapped IPv6 addresses count as their IPv4 address.</summary>
    public bool Contains(IPAddress address)
    {
        if (AllowsAny)
        {
            return true;
        }
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }
        foreach (IPNetwork network in _networks)
        {
            if (network.Contains(address))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Whether the peer with this formatted address is trusted. "" is a Unix-socket peer, which
    /// gunicorn trusts too: only local processes can connect to one.
    /// </summary>
    public bool ContainsPeer(string address)
    {
        if (AllowsAny || address.Length == 0)
        {
            return true;
        }
        return IPAddress.TryParse(address, out IPAddress? parsed) && Contains(parsed);
    }

    /// <summary>
    /// A strict textual address: dotted-quad IPv4 (no "10.1" or octal shorthands, which
    /// IPAddress.TryParse would accept) or IPv6 without a scope id.
    /// </summary>
    public static bool TryParseAddress(ReadOnlySpan<char> text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address)
    {
        address = null;
        if (text.IsEmpty || text.Length > 45)
        {
            return false;
        }
        if (text.Contains(':'))
        {
            if (text.Contains('%') || !IPAddress.TryParse(text, out IPAddress? v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }
            address = v6;
            return true;
        }
        Span<byte> bytes = stackalloc byte[4];
        int part = 0;
        int value = 0;
        int digits = 0;
        foreach (char c in text)
        {
            if (c == '.')
            {
                if (digits == 0 || part == 3)
                {
                    return false;
                }
                bytes[part++] = (byte)value;
                value = digits = 0;
            }
            else if (c is >= '0' and <= '9' && digits < 3)
            {
                value = value * 10 + (c - '0');
                digits++;
                if (value > 255)
                {
                    return false;
                }
            }
            else
            {
                return false;
            }
        }
        if (digits == 0 || part != 3)
        {
            return false;
        }
        bytes[3] = (byte)value;
        address = new IPAddress(bytes);
        return true;
    }

    private static IPAddress Masked(IPAddress address, int length)
    {
        byte[] bytes = address.GetAddressBytes();
        for (int i = 0; i < bytes.Length; i++)
        {
            int keep = Math.Clamp(length - i * 8, 0, 8);
            bytes[i] &= (byte)(0xFF << (8 - keep));
        }
        return new IPAddress(bytes);
    }

    public override string ToString() => Text;
}
