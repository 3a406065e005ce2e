using System.Text;
using Osprey.Wsgi;

namespace Osprey.Tests.Proxy;

/// <summary>Edge cases of reading X-Forwarded-* and Forwarded (the environ they produce is tested over HTTP in ForwardedHeadersTests).</summary>
public sealed class ForwardedHeadersParserTests
{
    private static readonly TrustedProxies Loopback = TrustedProxies.Default;
    private static readonly TrustedProxies Chain = TrustedProxies.Parse("127.0.0.1, 10.0.0.0/8, 2001:db8::/32", out _)!;
    private static readonly TrustedProxies Everyone = TrustedProxies.Parse("*", out _)!;

    private sealed record Result(string? Address, int Port, string? Scheme, string? Host);

    private static Result Resolve(string? forwarded = null, string? forwardedFor = null, string? proto = null, string? host = null,
        TrustedProxies? trusted = null)
    {
        ForwardedRequest r = ForwardedHeaders.Resolve(Bytes(forwarded), Bytes(forwardedFor), Bytes(proto), Bytes(host), trusted ?? Loopback);
        return new Result(r.ClientAddress?.ToString(), r.ClientPort, r.Scheme, r.Host.IsEmpty ? null : Encoding.Latin1.GetString(r.Host));
    }

    private static byte[] Bytes(string? text) => text is null ? [] : Encoding.Latin1.GetBytes(text);

    [Theory]
    [InlineData("203.0.113.7", "203.0.113.7", -1)]
    [InlineData(" 203.0.113.7 ", "203.0.113.7", -1)]
    [InlineData("198.51.100.1, 203.0.113.7", "203.0.113.7", -1)]
    [InlineData("198.51.100.1,203.0.113.7, 127.0.0.1", "203.0.113.7", -1)]
    [InlineData("203.0.113.7:4711", "203.0.113.7", 4711)]
    [InlineData("2001:db8::7", "2001:db8::7", -1)]
    [InlineData("[2001:db8::7]:4711", "2001:db8::7", 4711)]
    [InlineData("[2001:db8::7]", "2001:db8::7", -1)]
    [InlineData("127.0.0.1", "127.0.0.1", -1)]
    [InlineData("garbage, 203.0.113.7", "203.0.113.7", -1)]
    public void X_forwarded_for_gives_the_right_most_untrusted_hop(string header, string address, int port)
    {
        Result r = Resolve(forwardedFor: header);
        Assert.Equal(address, r.Address);
        Assert.Equal(port, r.Port);
    }

    [Fact]
    public void Trusted_hops_are_walked_past_and_all_trusted_gives_the_left_most()
    {
        Assert.Equal("203.0.113.7", Resolve(forwardedFor: "198.51.100.1, 203.0.113.7, 10.1.2.3, 2001:db8::9", trusted: Chain).Address);
        Assert.Equal("10.0.0.1", Resolve(forwardedFor: "10.0.0.1, 10.0.0.2", trusted: Chain).Address);
        // '*' trusts every hop, so the client is the left-most entry.
        Assert.Equal("198.51.100.1", Resolve(forwardedFor: "198.51.100.1, 203.0.113.7", trusted: Everyone).Address);
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("unknown")]
    [InlineData("")]
    [InlineData("203.0.113.7,")]
    [InlineData("203.0.113.7, ")]
    [InlineData("1.2.3")]
    [InlineData("1.2.3.4.5")]
    [InlineData("01.2.3.4x")]
    [InlineData("256.1.1.1")]
    [InlineData("::zz")]
    [InlineData("fe80::1%eth0")]
    [InlineData("203.0.113.7:99999")]
    [InlineData("203.0.113.7:")]
    [InlineData("[2001:db8::7")]
    [InlineData("[203.0.113.7]")]
    [InlineData("203.0.113.7 198.51.100.1")]
    [InlineData("caf\u00e9")]
    public void A_malformed_chosen_entry_leaves_the_address_alone(string header) => Assert.Null(Resolve(forwardedFor: header).Address);

    [Fact]
    public void A_chain_longer_than_the_bound_is_ignored()
    {
        string chain = string.Join(", ", Enumerable.Repeat("10.0.0.1", ForwardedHeaders.MaxHops + 1));
        Assert.Null(Resolve(forwardedFor: "203.0.113.7, " + chain, trusted: Chain).Address);
    }

    [Theory]
    [InlineData("https", "https")]
    [InlineData("HTTPS", "https")]
    [InlineData(" http ", "http")]
    [InlineData("http, https", "https")]
    [InlineData("ftp", null)]
    [InlineData("https://", null)]
    [InlineData("https, ", null)]
    [InlineData("", null)]
    public void X_forwarded_proto_gives_http_or_https_only(string header, string? scheme) => Assert.Equal(scheme, Resolve(proto: header).Scheme);

    [Theory]
    [InlineData("example.com", "example.com")]
    [InlineData("example.com:8443", "example.com:8443")]
    [InlineData("[2001:db8::1]:8443", "[2001:db8::1]:8443")]
    [InlineData("203.0.113.1", "203.0.113.1")]
    [InlineData("a.example, b.example", "b.example")]
    [InlineData("bad host", null)]
    [InlineData("evil.com/path", null)]
    [InlineData("user@evil.com", null)]
    [InlineData("example.com:http", null)]
    [InlineData("example.com:65536", null)]
    [InlineData(":80", null)]
    [InlineData("[2001:db8::1", null)]
    [InlineData("[nothost]:80", null)]
    public void X_forwarded_host_must_be_a_host_and_port(string header, string? host) => Assert.Equal(host, Resolve(host: header).Host);

    [Fact]
    public void Proto_and_host_come_from_the_same_hop_as_the_address()
    {
        // Two trusted proxies each appended: the client-facing one (10.0.0.5) saw https and the public name.
        Result r = Resolve(forwardedFor: "203.0.113.7, 10.0.0.5", proto: "https, http", host: "www.example.com, internal:8080", trusted: Chain);
        Assert.Equal(("203.0.113.7", "https", "www.example.com"), (r.Address, r.Scheme, r.Host));
        // A list shorter than the walk gives its left-most entry (one proxy set it, the next passed it on).
        r = Resolve(forwardedFor: "203.0.113.7, 10.0.0.5", proto: "https", host: "www.example.com", trusted: Chain);
        Assert.Equal(("https", "www.example.com"), (r.Scheme, r.Host));
    }

    [Fact]
    public void Forwarded_gives_address_port_scheme_and_host_of_one_hop()
    {
        Result r = Resolve(forwarded: "for=203.0.113.9;proto=https;host=example.org");
        Assert.Equal(new Result("203.0.113.9", -1, "https", "example.org"), r);

        r = Resolve(forwarded: "For=\"[2001:db8:cafe::17]:4711\"; Proto=http ; by=10.0.0.1;Host=\"example.org:8080\"");
        Assert.Equal(new Result("2001:db8:cafe::17", 4711, "http", "example.org:8080"), r);

        r = Resolve(forwarded: "for=198.51.100.1;proto=http, for=203.0.113.9;proto=https, for=10.0.0.5;proto=http", trusted: Chain);
        Assert.Equal(("203.0.113.9", "https"), (r.Address, r.Scheme));

        r = Resolve(forwarded: "for=\"203.0.113.9:_port\"");
        Assert.Equal(("203.0.113.9", -1), (r.Address, r.Port));
    }

    [Fact]
    public void Forwarded_takes_precedence_over_x_forwarded_for_each_part_it_gives()
    {
        Result r = Resolve(forwarded: "for=203.0.113.9", forwardedFor: "198.51.100.1", proto: "https", host: "x.example");
        Assert.Equal(new Result("203.0.113.9", -1, "https", "x.example"), r);
    }

    [Theory]
    [InlineData("for=unknown")]
    [InlineData("for=_hidden")]
    [InlineData("by=10.0.0.1")]
    [InlineData("for=\"[2001:db8::1\"")]
    public void A_forwarded_hop_without_an_address_keeps_the_peer_but_gives_its_proto(string header)
    {
        Result r = Resolve(forwarded: header + ";proto=https");
        Assert.Null(r.Address);
        Assert.Equal("https", r.Scheme);
    }

    [Theory]
    [InlineData("for=203.0.113.9;for=198.51.100.1")]
    [InlineData("for=\"203.0.113.9")]
    [InlineData("for=203.0.113.9:80")]
    [InlineData("for=\"203.0.113.9\\\"\"")]
    [InlineData("for=")]
    [InlineData("=203.0.113.9")]
    [InlineData("for 203.0.113.9")]
    [InlineData("for=203.0.113.9 x")]
    [InlineData("for=2001:db8::1")]
    public void Malformed_forwarded_is_ignored(string header)
    {
        Result r = Resolve(forwarded: header + ";proto=https");
        Assert.Null(r.Address);
        Assert.Null(r.Scheme);
    }

    [Fact]
    public void Empty_forwarded_elements_are_skipped()
    {
        Assert.Equal("203.0.113.9", Resolve(forwarded: " , for=203.0.113.9 ,, ").Address);
    }

    [Fact]
    public void Trusted_proxies_list_parses_addresses_networks_and_star()
    {
        TrustedProxies list = TrustedProxies.Parse(" 10.0.0.0/8 ,192.0.2.1,,2001:db8::/32", out string? error)!;
        Assert.Null(error);
        Assert.True(list.Contains(System.Net.IPAddress.Parse("10.200.1.1")));
        Assert.True(list.Contains(System.Net.IPAddress.Parse("::ffff:10.1.1.1")));
        Assert.True(list.Contains(System.Net.IPAddress.Parse("192.0.2.1")));
        Assert.False(list.Contains(System.Net.IPAddress.Parse("192.0.2.2")));
        Assert.True(list.Contains(System.Net.IPAddress.Parse("2001:db8:1::1")));
        Assert.False(list.Contains(System.Net.IPAddress.Parse("2001:db9::1")));
        Assert.True(list.ContainsPeer(""), "a Unix-socket peer is trusted, as in gunicorn");
        Assert.False(TrustedProxies.Parse("", out _)!.ContainsPeer("127.0.0.1"));
        Assert.True(TrustedProxies.Default.ContainsPeer("::1"));
        Assert.True(TrustedProxies.Default.ContainsPeer("127.0.0.1"));
        Assert.False(TrustedProxies.Default.ContainsPeer("127.0.0.2"));
    }
}
