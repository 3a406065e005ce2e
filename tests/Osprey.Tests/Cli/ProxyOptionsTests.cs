using System.Net;
using Osprey.Cli;

namespace Osprey.Tests.Cli;

/// <summary>--forwarded-allow-ips and --proxy-protocol on the command line (their effect is tested in tests/Osprey.Tests/Proxy).</summary>
public sealed class ProxyOptionsTests
{
    private static IPAddress[] NoDns(string host) => throw new InvalidOperationException("no DNS in these tests");

    private static ParseOutcome Parse(string[] args, string? forwardedAllowIpsVariable = null) =>
        CommandLine.Parse(args, NoDns, name => name == "FORWARDED_ALLOW_IPS" ? forwardedAllowIpsVariable : null);

    private static OspreyOptions Ok(string[] args, string? variable = null) => Assert.IsType<ParseOutcome.Run>(Parse(args, variable)).Options;

    private static string Err(string[] args, string? variable = null)
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(args, variable));
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    [Fact]
    public void Defaults_trust_loopback_and_leave_the_proxy_protocol_off()
    {
        OspreyOptions o = Ok(["app"]);
        Assert.Equal("127.0.0.1,::1", o.ForwardedAllowIps.Text);
        Assert.True(o.ForwardedAllowIps.Contains(IPAddress.Loopback));
        Assert.True(o.ForwardedAllowIps.Contains(IPAddress.IPv6Loopback));
        Assert.False(o.ForwardedAllowIps.Contains(IPAddress.Parse("10.0.0.1")));
        Assert.False(o.ProxyProtocol);
    }

    [Fact]
    public void Addresses_networks_and_star()
    {
        OspreyOptions o = Ok(["--forwarded-allow-ips", "10.0.0.0/8, 192.0.2.7,2001:db8::/32", "app"]);
        Assert.True(o.ForwardedAllowIps.Contains(IPAddress.Parse("10.9.8.7")));
        Assert.True(o.ForwardedAllowIps.Contains(IPAddress.Parse("192.0.2.7")));
        Assert.True(o.ForwardedAllowIps.Contains(IPAddress.Parse("2001:db8::42")));
        Assert.False(o.ForwardedAllowIps.Contains(IPAddress.Loopback));

        Assert.True(Ok(["--forwarded-allow-ips=*", "app"]).ForwardedAllowIps.AllowsAny);
        // Empty: trust nobody, as gunicorn's empty list.
        Assert.False(Ok(["--forwarded-allow-ips=", "app"]).ForwardedAllowIps.Contains(IPAddress.Loopback));
    }

    [Theory]
    [InlineData("localhost", "--forwarded-allow-ips: 'localhost' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8 or *)")]
    [InlineData("10.0.0.1,nope", "--forwarded-allow-ips: 'nope' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8 or *)")]
    [InlineData("10.1", "--forwarded-allow-ips: '10.1' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8 or *)")]
    [InlineData("10.0.0.0/33", "--forwarded-allow-ips: '10.0.0.0/33' is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)")]
    [InlineData("10.0.0.0/", "--forwarded-allow-ips: '10.0.0.0/' is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)")]
    [InlineData("10.0.0.0/-8", "--forwarded-allow-ips: '10.0.0.0/-8' is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)")]
    [InlineData("10.1.2.3/8", "--forwarded-allow-ips: '10.1.2.3/8' has bits set after the /8 prefix (did you mean 10.0.0.0/8?)")]
    [InlineData("2001:db8::1/32", "--forwarded-allow-ips: '2001:db8::1/32' has bits set after the /32 prefix (did you mean 2001:db8::/32?)")]
    public void Invalid_entries_are_one_clear_line(string value, string message) =>
        Assert.Equal(message, Err(["--forwarded-allow-ips", value, "app"]));

    [Fact]
    public void The_environment_variable_replaces_the_default_and_the_option_replaces_both()
    {
        Assert.True(Ok(["app"], variable: "*").ForwardedAllowIps.AllowsAny);
        Assert.False(Ok(["--forwarded-allow-ips", "10.0.0.1", "app"], variable: "*").ForwardedAllowIps.AllowsAny);
        Assert.Equal("FORWARDED_ALLOW_IPS (environment variable): 'proxy.lan' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8 or *)",
            Err(["app"], variable: "proxy.lan"));
        // A bad variable does not matter once the option is given.
        Assert.IsType<ParseOutcome.Run>(Parse(["--forwarded-allow-ips", "10.0.0.1", "app"], "proxy.lan"));
    }

    [Fact]
    public void Proxy_protocol_is_a_flag()
    {
        Assert.True(Ok(["--proxy-protocol", "app"]).ProxyProtocol);
        Assert.True(Ok(["app", "--proxy-protocol"]).ProxyProtocol);
        Assert.Equal("option --proxy-protocol does not take a value", Err(["--proxy-protocol=yes", "app"]));
    }

    [Fact]
    public void Both_options_are_in_the_help()
    {
        Assert.Contains("--forwarded-allow-ips STRING", CommandLine.HelpText, StringComparison.Ordinal);
        Assert.Contains("--proxy-protocol", CommandLine.HelpText, StringComparison.Ordinal);
        Assert.Contains("[127.0.0.1,::1]", CommandLine.HelpText, StringComparison.Ordinal);
    }
}
