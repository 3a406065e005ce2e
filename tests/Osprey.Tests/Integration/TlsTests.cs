using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Workers;

namespace Osprey.Tests.Integration;

/// <summary>
/// <c>--certfile</c>/<c>--keyfile</c>: every listener speaks TLS (Kestrel), HTTP/1.1 or HTTP/2 as the
/// client's ALPN asks, and the application sees <c>wsgi.url_scheme</c> https. Certificates are made
/// here, in a temporary directory, for 127.0.0.1.
/// </summary>
public sealed class TlsTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static Task<OspreyServer> StartAsync(string? engine, params string[] args) =>
        OspreyServer.StartAsync(new OspreyServerOptions { App = "tls_app:app", Engine = engine, Args = args });

    /// <summary>A client that trusts any server certificate and records the one it was shown.</summary>
    private sealed class Client : IDisposable
    {
        /// <param name="certificate">A client certificate (with its key) to present whatever authorities the server names.</param>
        public Client(Version version, X509Certificate2? certificate = null)
        {
            var handler = new SocketsHttpHandler
            {
                SslOptions = new SslClientAuthenticationOptions
                {
                    RemoteCertificateValidationCallback = (_, certificate, chain, _) =>
                    {
                        Presented = certificate?.Subject;
                        SentChain = chain?.ChainPolicy.ExtraStore.Select(c => c.Subject).ToArray() ?? [];
                        return true;
                    },
                    LocalCertificateSelectionCallback = certificate is null ? null : (_, _, _, _, _) => certificate,
                },
            };
            Http = new HttpClient(handler)
            {
                DefaultRequestVersion = version,
                DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Timeout = TimeSpan.FromSeconds(30),
            };
        }

        public HttpClient Http { get; }

        public string? Presented { get; private set; }

        /// <summary>The certificates the server sent besides its own.</summary>
        public string[] SentChain { get; private set; } = [];

        public async Task<JsonElement> GetEnvironAsync(OspreyServer server, string target = "/")
        {
            using var response = await Http.GetAsync(new Uri($"https://127.0.0.1:{server.Port}{target}"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        }

        public void Dispose() => Http.Dispose();
    }

    internal static (X509Certificate2 Certificate, ECDsa Key) Issue(string subject, X509Certificate2? issuer, bool authority, bool expired = false)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(authority, false, 0, true));
        if (!authority)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
        }
        var notBefore = DateTimeOffset.UtcNow.AddDays(expired ? -30 : 0).AddMinutes(-5);
        var notAfter = expired ? DateTimeOffset.UtcNow.AddDays(-1) : DateTimeOffset.UtcNow.AddDays(1);
        if (issuer is not null && notAfter > issuer.NotAfter)
        {
            // Issued a moment after its authority, "a day from now" is later than the authority's own
            // end, which Create refuses (seen when the two straddled a second).
            notAfter = issuer.NotAfter;
        }
        var certificate = issuer is null
            ? request.CreateSelfSigned(notBefore, notAfter)
            : request.Create(issuer, notBefore, notAfter, RandomNumberGenerator.GetBytes(8)).CopyWithPrivateKey(key);
        return (certificate, key);
    }

    /// <summary>Writes a self-signed certificate for 127.0.0.1 and its key; returns the two paths.</summary>
    private (string Cert, string Key) WriteSelfSigned(string subject, string prefix = "server", bool expired = false) =>
        WriteSelfSigned(_dir, subject, prefix, expired);

    /// <summary>Writes a self-signed certificate for 127.0.0.1 and its key into <paramref name="directory"/>; returns the two paths.</summary>
    public static (string Cert, string Key) WriteSelfSigned(string directory, string subject, string prefix = "server", bool expired = false)
    {
        var (certificate, key) = Issue(subject, issuer: null, authority: false, expired);
        using (certificate)
        using (key)
        {
            var cert = Path.Combine(directory, prefix + ".crt");
            var keyFile = Path.Combine(directory, prefix + ".key");
            File.WriteAllText(cert, certificate.ExportCertificatePem());
            File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
            return (cert, keyFile);
        }
    }

    [Theory]
    [InlineData(null, "1.1")]
    [InlineData(null, "2.0")]
    [InlineData("kestrel", "1.1")]
    [InlineData("kestrel", "2.0")]
    public async Task Https_is_served_over_the_version_the_client_negotiates_with_an_https_environ(string? engine, string version)
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(engine, "--certfile", cert, "--keyfile", key);
        using var client = new Client(Version.Parse(version));

        using var response = await client.Http.GetAsync(new Uri($"https://127.0.0.1:{server.Port}/path?q=1"));
        var environ = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

        Assert.Equal(Version.Parse(version), response.Version);
        Assert.Equal("CN=osprey-test", client.Presented);
        Assert.Equal("https", environ.GetProperty("wsgi.url_scheme").GetString());
        Assert.Equal(version == "2.0" ? "HTTP/2.0" : "HTTP/1.1", environ.GetProperty("SERVER_PROTOCOL").GetString());
        Assert.Equal($"127.0.0.1:{server.Port}", environ.GetProperty("HTTP_HOST").GetString());
        Assert.Equal(server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), environ.GetProperty("SERVER_PORT").GetString());
        Assert.Equal("/path", environ.GetProperty("PATH_INFO").GetString());
        Assert.Equal("q=1", environ.GetProperty("QUERY_STRING").GetString());
        Assert.Contains("Listening at: https://127.0.0.1:", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Http2_streams_of_one_connection_are_served_at_the_same_time()
    {
        // /together answers 200 only when a second request reaches the application while the
        // first one waits: two streams, one connection, two Python threads.
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key, "--threads", "2");
        using var client = new Client(HttpVersion.Version20);
        var first = await client.GetEnvironAsync(server);

        var uri = new Uri($"https://127.0.0.1:{server.Port}/together");
        var responses = await Task.WhenAll(client.Http.GetAsync(uri), client.Http.GetAsync(uri));
        var second = await client.GetEnvironAsync(server);

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.All(responses, r => Assert.Equal(HttpVersion.Version20, r.Version));
        // The same client port before and after: every request went over the one connection.
        Assert.Equal(first.GetProperty("REMOTE_PORT").GetString(), second.GetProperty("REMOTE_PORT").GetString());
        foreach (var r in responses)
        {
            r.Dispose();
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_request_body_over_http2_reaches_wsgi_input_whole(bool withLength)
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);
        using var client = new Client(HttpVersion.Version20);
        var body = RandomNumberGenerator.GetBytes(300_000);

        // Without a length, HTTP/2 carries the body in DATA frames up to END_STREAM: no Content-Length at all.
        HttpContent content = withLength
            ? new ByteArrayContent(body)
            : new StreamContent(new UnseekableStream(body));
        using var response = await client.Http.PostAsync(new Uri($"https://127.0.0.1:{server.Port}/echo"), content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(withLength, content.Headers.ContentLength.HasValue);
        Assert.Equal(body, await response.Content.ReadAsByteArrayAsync());
    }

    /// <summary>An empty header value (RFC 9110 §5.5) goes out over both protocols, as gunicorn sends it.</summary>
    [Theory]
    [InlineData("1.1")]
    [InlineData("2.0")]
    public async Task A_header_with_an_empty_value_is_sent(string version)
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);
        using var client = new Client(Version.Parse(version));

        using var response = await client.Http.GetAsync(new Uri($"https://127.0.0.1:{server.Port}/empty_header"));

        Assert.Equal(Version.Parse(version), response.Version);
        Assert.True(response.Headers.TryGetValues("X-Empty", out var values), response.ToString());
        Assert.Equal([""], values);
        Assert.Equal(["y"], response.Headers.GetValues("X-After"));
        Assert.Equal("hello", await response.Content.ReadAsStringAsync());
    }

    /// <summary>
    /// A body shorter than its Content-Length ends the HTTP/2 stream with a reset, but the bytes the
    /// application did send reach the client first, as they do over HTTP/1.1 before the close.
    /// </summary>
    [Fact]
    public async Task A_short_body_over_http2_delivers_what_was_sent_before_the_reset()
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);
        using var client = new Client(HttpVersion.Version20);

        using var response = await client.Http.GetAsync(new Uri($"https://127.0.0.1:{server.Port}/cl_short"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(100, response.Content.Headers.ContentLength);
        var received = new MemoryStream();
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[1024];
        Exception? ended = null;
        try
        {
            int n;
            while ((n = await body.ReadAsync(buffer)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            ended = e;
        }

        Assert.Equal("0123456789", System.Text.Encoding.ASCII.GetString(received.ToArray()));
        Assert.NotNull(ended);
        // The stream was reset, not the connection: the next request goes over the same one.
        await client.GetEnvironAsync(server);
    }

    [Fact]
    public async Task The_key_may_sit_in_the_certificate_file_and_intermediates_are_sent_with_the_certificate()
    {
        var (root, rootKey) = Issue("CN=osprey-test-root", issuer: null, authority: true);
        var (intermediate, intermediateKey) = Issue("CN=osprey-test-intermediate", root, authority: true);
        var (leaf, leafKey) = Issue("CN=osprey-test-leaf", intermediate, authority: false);
        var bundle = PathOf("bundle.pem");
        File.WriteAllText(bundle, leaf.ExportCertificatePem() + "\n" + intermediate.ExportCertificatePem() + "\n" + leafKey.ExportPkcs8PrivateKeyPem());
        foreach (IDisposable d in new IDisposable[] { root, rootKey, intermediate, intermediateKey, leaf, leafKey })
        {
            d.Dispose();
        }

        await using var server = await StartAsync(null, "--certfile", bundle);
        using var client = new Client(HttpVersion.Version11);
        var environ = await client.GetEnvironAsync(server);

        Assert.Equal("https", environ.GetProperty("wsgi.url_scheme").GetString());
        Assert.Equal("CN=osprey-test-leaf", client.Presented);
        Assert.Contains("CN=osprey-test-intermediate", client.SentChain);
    }

    [Fact]
    public async Task An_expired_certificate_is_served_with_a_warning()
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-expired", expired: true);
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);
        using var client = new Client(HttpVersion.Version11);

        await client.GetEnvironAsync(server);

        Assert.Equal("CN=osprey-expired", client.Presented);
        Assert.Matches(@"\[WARNING\] the TLS certificate \(CN=osprey-expired\) expired on", server.ErrorLog);
    }

    public static TheoryData<int, string, bool> ClientCertificateCases => new()
    {
        // --cert-reqs, the client's certificate, answered
        { 2, "from-the-authority", true },
        { 2, "none", false },
        { 2, "from-another-authority", false },
        { 1, "from-the-authority", true },
        { 1, "none", true },
        { 1, "from-another-authority", false },
        { 0, "from-another-authority", true },
    };

    [Theory, MemberData(nameof(ClientCertificateCases))]
    public async Task Client_certificates_are_checked_against_the_ca_certs_as_cert_reqs_says(int certReqs, string presented, bool answered)
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        var (authority, authorityKey) = Issue("CN=osprey-test-client-ca", issuer: null, authority: true);
        var (stranger, strangerKey) = Issue("CN=osprey-test-other-ca", issuer: null, authority: true);
        var ca = PathOf("clients-ca.pem");
        File.WriteAllText(ca, authority.ExportCertificatePem());
        var (trusted, trustedKey) = Issue("CN=alice", authority, authority: false);
        var (untrusted, untrustedKey) = Issue("CN=mallory", stranger, authority: false);
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key, "--ca-certs", ca,
            "--cert-reqs", certReqs.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var client = new Client(HttpVersion.Version11, presented switch
        {
            "from-the-authority" => trusted,
            "from-another-authority" => untrusted,
            _ => null,
        });

        Exception? refused = null;
        try
        {
            await client.GetEnvironAsync(server);
        }
        catch (HttpRequestException e)
        {
            refused = e;
        }

        Assert.True(answered == (refused is null), $"--cert-reqs {certReqs}, client certificate {presented}: {refused}");
        // The server goes on serving whoever may come.
        using var allowed = new Client(HttpVersion.Version11, trusted);
        await allowed.GetEnvironAsync(server);
        foreach (IDisposable d in new IDisposable[] { authority, authorityKey, stranger, strangerKey, trusted, trustedKey, untrusted, untrustedKey })
        {
            d.Dispose();
        }
    }

    [Fact]
    public async Task HUP_serves_a_renewed_certificate_without_a_restart()
    {
        var (cert, key) = WriteSelfSigned("CN=before-renewal");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);
        using (var before = new Client(HttpVersion.Version11))
        {
            await before.GetEnvironAsync(server);
            Assert.Equal("CN=before-renewal", before.Presented);
        }
        var oldWorker = (await ProcessTools.WaitForChildrenAsync(server.ProcessId, 1, Eventually)).Single();

        WriteSelfSigned("CN=after-renewal");
        var mark = server.ErrorLogPosition;
        ProcessTools.Signal(server.ProcessId, ProcessTools.SIGHUP);
        await server.WaitForLogAsync($"Worker (pid:{oldWorker}, ", Eventually, mark);

        using var after = new Client(HttpVersion.Version11);
        await after.GetEnvironAsync(server);
        Assert.Equal("CN=after-renewal", after.Presented);
    }

    [Fact]
    public async Task A_refused_http2_request_ends_its_stream_and_the_connection_goes_on()
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key, "--limit-request-body", "100");
        using var client = new Client(HttpVersion.Version20);
        var before = await client.GetEnvironAsync(server);

        using var refused = await client.Http.PostAsync(new Uri($"https://127.0.0.1:{server.Port}/echo"), new ByteArrayContent(new byte[2000]));
        var after = await client.GetEnvironAsync(server);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, refused.StatusCode);
        Assert.Equal(before.GetProperty("REMOTE_PORT").GetString(), after.GetProperty("REMOTE_PORT").GetString());
        // HTTP/2 has no Connection header; Kestrel warns when one is set.
        Assert.DoesNotContain("WARNING", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_cleartext_request_to_a_tls_listener_gets_no_response_and_the_server_goes_on()
    {
        var (cert, key) = WriteSelfSigned("CN=osprey-test");
        await using var server = await StartAsync(null, "--certfile", cert, "--keyfile", key);

        byte[] answer;
        using (var connection = await RawHttpConnection.OpenAsync(server.Port))
        {
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            answer = await connection.ReadToCloseAsync(TimeSpan.FromSeconds(15));
            Assert.True(connection.ServerClosed);
        }
        using var client = new Client(HttpVersion.Version11);
        var environ = await client.GetEnvironAsync(server);

        Assert.False(System.Text.Encoding.Latin1.GetString(answer).StartsWith("HTTP/", StringComparison.Ordinal));
        Assert.Equal("https", environ.GetProperty("wsgi.url_scheme").GetString());
    }

    /// <summary>A body of unknown length, so HttpClient sends no Content-Length.</summary>
    private sealed class UnseekableStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
