namespace Osprey.Http;

/// <summary>Limits and timeouts the engines share, taken from the command line.</summary>
public sealed record HttpSettings(
    long BodyBufferSize,
    long? MaxRequestBodySize,
    TimeSpan KeepAlive,
    int MaxRequestLine,
    int MaxRequestHeaders,
    int MaxRequestFieldSize);
