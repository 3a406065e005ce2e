using System.Net;
using Osprey.Cli;

namespace Osprey.Tests.Cli;

/// <summary>--certfile and --keyfile on the command line (serving TLS is tested in Integration/TlsTests).</summary>
public sealed class TlsOptionsTests
{
    private static IPAddress[] NoDns(string host) => throw new InvalidOperationException("no DNS in these tests");

    private static ParseOutcome Parse(params string[] args) => CommandLine.Parse(args, NoDns);

    private static OspreyOptions Ok(params string[] args) => Assert.IsType<ParseOutcome.Run>(Parse(args)).Options;

    private static string Err(params string[] args)
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(args));
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    [Fact]
    public void Cleartext_by_default()
    {
        OspreyOptions o = Ok("app");
        Assert.False(o.Tls);
        Assert.Null(o.CertFile);
        Assert.Null(o.KeyFile);
    }

    [Fact]
    public void Paths_are_made_absolute_before_workers_change_directory()
    {
        OspreyOptions o = Ok("--certfile", "certs/site.crt", "--keyfile=certs/site.key", "app");
        Assert.True(o.Tls);
        Assert.Equal(Path.GetFullPath("certs/site.crt"), o.CertFile);
        Assert.Equal(Path.GetFullPath("certs/site.key"), o.KeyFile);
    }

    [Fact]
    public void A_certificate_file_alone_is_enough()
    {
        OspreyOptions o = Ok("--certfile", "/etc/site.pem", "app");
        Assert.Equal("/etc/site.pem", o.CertFile);
        Assert.Null(o.KeyFile);
    }

    [Fact]
    public void A_key_without_a_certificate_is_refused()
    {
        Assert.Contains("--keyfile needs --certfile", Err("--keyfile", "site.key", "app"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("osprey")]
    [InlineData("OSPREY")]
    public void The_cleartext_engine_with_a_certificate_is_refused(string engine)
    {
        string message = Err("--engine", engine, "--certfile", "site.pem", "app");
        Assert.Contains("--engine osprey", message, StringComparison.Ordinal);
        Assert.Contains("--certfile", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("kestrel")]
    public void Engines_that_speak_tls_are_accepted(string engine)
    {
        Assert.True(Ok("--engine", engine, "--certfile", "site.pem", "app").Tls);
    }

    [Fact]
    public void Client_certificate_options_need_what_they_depend_on()
    {
        OspreyOptions o = Ok("--certfile", "/s.pem", "--ca-certs", "ca.pem", "--cert-reqs", "2", "app");
        Assert.Equal(Path.GetFullPath("ca.pem"), o.CaCerts);
        Assert.Equal(Osprey.Http.Kestrel.ClientCertificates.Required, o.CertReqs);
        Assert.Equal(Osprey.Http.Kestrel.ClientCertificates.None, Ok("--certfile", "/s.pem", "app").CertReqs);

        Assert.Contains("--ca-certs needs --certfile", Err("--ca-certs", "ca.pem", "app"), StringComparison.Ordinal);
        Assert.Contains("--cert-reqs 1 or 2 needs --ca-certs", Err("--certfile", "/s.pem", "--cert-reqs", "1", "app"), StringComparison.Ordinal);
        Assert.Contains("between 0 and 2", Err("--certfile", "/s.pem", "--cert-reqs", "3", "app"), StringComparison.Ordinal);
    }

    [Fact]
    public void Empty_paths_are_refused()
    {
        Assert.Contains("--certfile", Err("--certfile=", "app"), StringComparison.Ordinal);
        Assert.Contains("--keyfile", Err("--certfile", "a.pem", "--keyfile=", "app"), StringComparison.Ordinal);
    }
}
