using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Osprey.Http.Kestrel;

/// <summary>
/// --max-connections for Kestrel: the accept loop waits for a free slot before it accepts, so a
/// client beyond the limit waits in the kernel's listen backlog (as with the lean engine) and is
/// served as soon as another connection closes, instead of being accepted and dropped as
/// Kestrel's own MaxConcurrentConnections does.
/// </summary>
internal sealed class ConnectionLimitingTransport(IConnectionListenerFactory inner, int maxConnections) : IConnectionListenerFactory
{
    // One pool of slots for all listeners: the limit is per worker, not per socket.
    private readonly SemaphoreSlim _slots = new(maxConnections, maxConnections);

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        new Listener(await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false), _slots);

    private sealed class Listener(IConnectionListener inner, SemaphoreSlim slots) : IConnectionListener
    {
        private readonly CancellationTokenSource _unbound = new();

        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            using CancellationTokenSource linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
            try
            {
                await slots.WaitAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Kestrel reads null as "this listener is done".
                return null;
            }
            ConnectionContext? connection;
            try
            {
                connection = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                slots.Release();
                throw;
            }
            if (connection is null)
            {
                slots.Release();
                return null;
            }
            connection.ConnectionClosed.Register(static state => ((SemaphoreSlim)state!).Release(), slots);
            return connection;
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _unbound.Cancel();
            return inner.UnbindAsync(cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            _unbound.Cancel();
            await inner.DisposeAsync().ConfigureAwait(false);
            _unbound.Dispose();
        }
    }
}
