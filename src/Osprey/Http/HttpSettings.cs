namespace Osprey.Http;

/// <summary>Limits and timeouts the engines share, taken from the command line.</summary>
/// <param name="HeaderTimeout">How long a client may take to send a complete request head (408 after).</param>
/// <param name="MinRequestBodyRate">Bytes per second a request body must keep up after a grace period (408 below it); 0 disables the check.</param>
/// <param name="MaxConnections">Connections served at once; beyond it new ones wait in the listen backlog. 0 means unlimited.</param>
/// <param name="Backlog">The listen(2) backlog, which an engine that calls listen() again must keep.</param>
public sealed record HttpSettings(
    long BodyBufferSize,
    long? MaxRequestBodySize,
    TimeSpan KeepAlive,
    int MaxRequestLine,
    int MaxRequestHeaders,
    int MaxRequestFieldSize,
    TimeSpan HeaderTimeout,
    int MinRequestBodyRate,
    int MaxConnections,
    int Backlog)
{
    /// <summary>A body slower than <see cref="MinRequestBodyRate"/> is refused only after this long, so a slow start is no offence (Kestrel's default grace).</summary>
    public static readonly TimeSpan BodyRateGracePeriod = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Kestrel's MinResponseDataRate, which both engines apply themselves where Kestrel does not
    /// (the lean engine; HTTP/2 streams): while the Python thread waits for the client to read, the
    /// client must take at least this many bytes a second, measured over windows of
    /// <see cref="ResponseRateWindowMs"/>, or it is dropped; so a reader that takes a byte now and
    /// then cannot hold a Python thread indefinitely. Windows, not an average over the response,
    /// because the kernel's socket buffers swallow megabytes at once and would flatter any average.
    /// </summary>
    public const long MinResponseBytesPerSecond = 240;
    public const long ResponseRateWindowMs = 5_000;

    /// <summary>Peers trusted to send a PROXY protocol header (<c>--proxy-allow-from</c>, else <c>--forwarded-allow-ips</c>).</summary>
    public Wsgi.TrustedProxies ProxyAllowFrom { get; init; } = Wsgi.TrustedProxies.Default;

    /// <summary><c>--proxy-protocol</c>: a connection from a trusted peer may start with a PROXY v1 or v2 header.</summary>
    public bool ProxyProtocol { get; init; }

    /// <summary><c>--certfile</c>: every listener speaks TLS with this certificate, HTTP/1.1 or HTTP/2 by ALPN; null for cleartext.</summary>
    public Kestrel.TlsCertificate? Tls { get; init; }
}
