namespace Osprey.Http;

/// <summary>A running HTTP engine serving the listeners it was started on.</summary>
public interface IHttpEngine : IAsyncDisposable
{
    /// <summary>Stops accepting, lets in-flight requests finish within <paramref name="grace"/>, then closes what is left.</summary>
    Task StopAsync(TimeSpan grace);
}
