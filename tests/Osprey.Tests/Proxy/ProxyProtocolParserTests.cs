using System.Net;
using System.Text;
using Osprey.Http;

namespace Osprey.Tests.Proxy;

/// <summary>Edge cases of the PROXY protocol parser both engines share (the engines themselves are tested over sockets in ProxyProtocolTests).</summary>
public sealed class ProxyProtocolParserTests
{
    private static ProxyHeaderStatus Parse(byte[] data, out int consumed, out ProxyHeader header) =>
        ProxyProtocol.TryParse(data, out consumed, out header);

    private static ProxyHeaderStatus Parse(string latin1) => Parse(Encoding.Latin1.GetBytes(latin1), out _, out _);

    [Fact]
    public void V1_tcp4_gives_both_endpoints_and_its_length()
    {
        byte[] data = Encoding.ASCII.GetBytes("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\r\nGET / HTTP/1.1\r\n");
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(data, out int consumed, out ProxyHeader header));
        Assert.Equal("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\r\n".Length, consumed);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("203.0.113.5"), 51234), header.Source);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("192.0.2.10"), 8080), header.Destination);
    }

    [Fact]
    public void V1_tcp6_and_unknown()
    {
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(Encoding.ASCII.GetBytes("PROXY TCP6 2001:db8::5 ::1 1 65535\r\n"), out _, out ProxyHeader v6));
        Assert.Equal(IPAddress.Parse("2001:db8::5"), v6.Source!.Address);
        Assert.Equal(65535, v6.Destination!.Port);

        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(Encoding.ASCII.GetBytes("PROXY UNKNOWN\r\n"), out int consumed, out ProxyHeader unknown));
        Assert.Equal(15, consumed);
        Assert.Null(unknown.Source);
        // Whatever follows UNKNOWN on the line is to be ignored.
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("P")]
    [InlineData("PROX")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\r")]
    [InlineData("\r\n\r\n\0\r\nQUIT")]
    public void A_prefix_of_a_header_needs_more(string latin1) => Assert.Equal(ProxyHeaderStatus.NeedMore, Parse(latin1));

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n")]
    [InlineData("POST / HTTP/1.1\r\n")]
    [InlineData("PUT / HTTP/1.1\r\n")]
    [InlineData("\r\nGET / HTTP/1.1\r\n")]
    public void Plain_http_is_not_a_header(string latin1) => Assert.Equal(ProxyHeaderStatus.None, Parse(latin1));

    [Theory]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080 extra\r\n")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 51234\r\n")]
    [InlineData("PROXY TCP4  203.0.113.5 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY TCP5 203.0.113.5 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY tcp4 203.0.113.5 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY TCP4 300.0.113.5 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY TCP4 10.1 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY TCP4 2001:db8::5 192.0.2.10 51234 8080\r\n")]
    [InlineData("PROXY TCP6 203.0.113.5 2001:db8::1 51234 8080\r\n")]
    [InlineData("PROXY TCP6 fe80::1%eth0 2001:db8::1 51234 8080\r\n")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 65536 8080\r\n")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 -1 8080\r\n")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 080 8080\r\n")]
    [InlineData("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\n")]
    [InlineData("PROXY \r\n")]
    public void Malformed_v1_is_invalid(string latin1) => Assert.Equal(ProxyHeaderStatus.Invalid, Parse(latin1));

    [Fact]
    public void V1_without_crlf_within_107_bytes_is_invalid()
    {
        string longLine = "PROXY UNKNOWN " + new string('x', 120);
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(longLine));
        // 107 bytes exactly, CRLF included, is still a line.
        string exact = "PROXY UNKNOWN " + new string('x', 107 - 16) + "\r\n";
        Assert.Equal(107, exact.Length);
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(exact));
    }

    [Fact]
    public void V2_proxy_inet_and_inet6_with_tlvs()
    {
        byte[] v4 = V2(0x21, 0x11, [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90], tlvs: [0x04, 0x00, 0x02, 0xAB, 0xCD]);
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse([.. v4, .. "GET"u8.ToArray()], out int consumed, out ProxyHeader header));
        Assert.Equal(v4.Length, consumed);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("203.0.113.5"), 51234), header.Source);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("192.0.2.10"), 8080), header.Destination);

        byte[] addresses = [.. IPAddress.Parse("2001:db8::5").GetAddressBytes(), .. IPAddress.Parse("2001:db8::1").GetAddressBytes(), 0x00, 0x50, 0x01, 0xBB];
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x21, 0x21, addresses), out _, out ProxyHeader v6));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("2001:db8::5"), 80), v6.Source);
        Assert.Equal(443, v6.Destination!.Port);
    }

    [Fact]
    public void V2_local_unspec_and_unix_keep_the_real_peer()
    {
        // LOCAL carries addresses the receiver must ignore.
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x20, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]), out _, out ProxyHeader local));
        Assert.Null(local.Source);
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x20, 0x00, []), out _, out _));
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x21, 0x00, []), out _, out ProxyHeader unspec));
        Assert.Null(unspec.Source);
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x21, 0x31, new byte[216]), out _, out ProxyHeader unix));
        Assert.Null(unix.Source);
    }

    [Fact]
    public void V2_waits_for_its_declared_length()
    {
        byte[] whole = V2(0x21, 0x11, [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90]);
        for (int length = 1; length < whole.Length; length++)
        {
            Assert.Equal(ProxyHeaderStatus.NeedMore, Parse(whole[..length], out _, out _));
        }
    }

    [Fact]
    public void Malformed_v2_is_invalid()
    {
        byte[] inet = [203, 0, 113, 5, 192, 0, 2, 10, 0xC8, 0x22, 0x1F, 0x90];
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x11, 0x11, inet), out _, out _));   // version 1 in the binary form
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x22, 0x11, inet), out _, out _));   // command 2
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x41, inet), out _, out _));   // family 4
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x13, inet), out _, out _));   // transport 3
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x11, inet[..11]), out _, out _)); // INET block too short
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x21, new byte[35]), out _, out _)); // INET6 block too short
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x31, new byte[100]), out _, out _)); // UNIX block too short
        // Beyond the bound, refused from the fixed 16 bytes alone: nothing waits for 64 KiB.
        byte[] huge = V2(0x21, 0x11, inet);
        huge[14] = 0xFF;
        huge[15] = 0xFF;
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(huge[..16], out _, out _));
        Assert.Equal(ProxyHeaderStatus.Parsed, Parse(V2(0x21, 0x11, inet, tlvs: new byte[ProxyProtocol.MaxV2Length - 16 - 12]), out _, out _));
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(V2(0x21, 0x11, inet, tlvs: new byte[ProxyProtocol.MaxV2Length - 16 - 12 + 1]), out _, out _));
    }

    [Fact]
    public void A_header_split_across_pipe_segments_parses_as_one()
    {
        byte[] data = Encoding.ASCII.GetBytes("PROXY TCP4 203.0.113.5 192.0.2.10 51234 8080\r\nGET");
        var first = new Segment(data.AsMemory(0, 10));
        Segment last = first.Append(data.AsMemory(10, 20)).Append(data.AsMemory(30));
        var sequence = new System.Buffers.ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        Assert.Equal(ProxyHeaderStatus.Parsed, ProxyProtocol.TryParse(sequence, out int consumed, out ProxyHeader header));
        Assert.Equal(data.Length - 3, consumed);
        Assert.Equal(51234, header.Source!.Port);
    }

    /// <summary>A v2 header: signature, version/command, family/transport, length, then the blocks.</summary>
    internal static byte[] V2(byte versionCommand, byte familyTransport, byte[] addresses, byte[]? tlvs = null)
    {
        byte[] signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
        int length = addresses.Length + (tlvs?.Length ?? 0);
        return [.. signature, versionCommand, familyTransport, (byte)(length >> 8), (byte)length, .. addresses, .. tlvs ?? []];
    }

    private sealed class Segment : System.Buffers.ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
