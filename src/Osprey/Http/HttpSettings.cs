namespace Osprey.Http;

/// <summary>Limits and timeouts the engines share, taken from the command line.</summary>
public sealed record HttpSettings(
    long BodyBufferSize,
    long? MaxRequestBodySize,
    TimeSpan KeepAlive,
    int MaxRequestLine,
    int MaxRequestHeaders,
    int MaxRequestFieldSize)
{
    /// <summary>Peers trusted to send a PROXY protocol header (<c>--forwarded-allow-ips</c>).</summary>
    public Wsgi.TrustedProxies ForwardedAllowIps { get; init; } = Wsgi.TrustedProxies.Default;

    /// <summary><c>--proxy-protocol</c>: a connection from a trusted peer may start with a PROXY v1 or v2 header.</summary>
    public bool ProxyProtocol { get; init; }
}
