using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Osprey.Http.Kestrel;

/// <summary>
/// --max-connections for Kestrel: no listener accepts while the worker is at the limit, so a client beyond
/// it waits in the kernel's listen backlog (as with the lean engine), where a sibling worker sharing the
/// socket can take it, and is served as soon as another connection closes, instead of being accepted and
/// dropped as Kestrel's own MaxConcurrentConnections does.
/// </summary>
/// <remarks>
/// The limit is per worker, over all its listeners, and a listener must not hold a share of it while it waits
/// for a client: with one listener idle on each bind, a limit no larger than the binds would leave some binds
/// never accepting. So every listener waits for room, accepts, and the accept that reaches the limit cancels
/// the others' pending accepts (a cancelled accept takes no connection from the backlog).
/// </remarks>
internal sealed class ConnectionLimitingTransport(IConnectionListenerFactory inner, int maxConnections) : IConnectionListenerFactory
{
    private readonly ConnectionLimit _limit = new(maxConnections);

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        new Listener(await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false), _limit);

    /// <summary>The worker's open connections against the limit, shared by its listeners.</summary>
    private sealed class ConnectionLimit(int max)
    {
        private readonly Lock _gate = new();
        private int _open;
        /// <summary>Completed when the count drops below the limit; waited on while at it.</summary>
        private TaskCompletionSource _room = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>Cancelled when the count reaches the limit: the pending accepts stop.</summary>
        private CancellationTokenSource _full = new();

        /// <summary>Waits until there is room; returns a token cancelled when the limit is next reached.</summary>
        public async ValueTask<CancellationToken> WaitForRoomAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task room;
                lock (_gate)
                {
                    if (_open < max)
                    {
                        return _full.Token;
                    }
                    room = _room.Task;
                }
                await room.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        public void Opened()
        {
            CancellationTokenSource? full = null;
            lock (_gate)
            {
                // Accepts that completed together can pass the limit by one per listener; Closed copes.
                if (++_open == max)
                {
                    full = _full;
                }
            }
            // Outside the lock: cancelling runs the pending accepts' callbacks.
            full?.Cancel();
        }

        public void Closed()
        {
            TaskCompletionSource? room = null;
            lock (_gate)
            {
                if (_open-- == max)
                {
                    room = _room;
                    _room = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _full = new CancellationTokenSource();
                }
            }
            room?.TrySetResult();
        }
    }

    private sealed class Listener(IConnectionListener inner, ConnectionLimit limit) : IConnectionListener
    {
        private readonly CancellationTokenSource _unbound = new();

        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            using CancellationTokenSource stopped = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
            while (true)
            {
                CancellationToken full;
                try
                {
                    full = await limit.WaitForRoomAsync(stopped.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Kestrel reads null as "this listener is done".
                    return null;
                }
                ConnectionContext? connection;
                using (CancellationTokenSource accept = CancellationTokenSource.CreateLinkedTokenSource(stopped.Token, full))
                {
                    try
                    {
                        connection = await inner.AcceptAsync(accept.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (!stopped.IsCancellationRequested)
                    {
                        // Another listener's accept reached the limit.
                        continue;
                    }
                    catch (OperationCanceledException)
                    {
                        return null;
                    }
                }
                if (connection is null)
                {
                    return null;
                }
                limit.Opened();
                connection.ConnectionClosed.Register(static state => ((ConnectionLimit)state!).Closed(), limit);
                return connection;
            }
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
