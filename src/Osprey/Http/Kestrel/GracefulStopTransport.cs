using System.Net;
using Microsoft.AspNetCore.Connections;

namespace Osprey.Http.Kestrel;

/// <summary>
/// Lets the engine stop accepting before Kestrel stops its connections. Kestrel's own stop closes every
/// connection that is waiting for a request, including one accepted a moment ago whose client has not sent
/// its first request yet: that client gets a close instead of an answer, and would not retry (it retries
/// only on a reused connection). So a stop first unbinds the listeners, then gives the connections accepted
/// last a moment to send their request (<see cref="FreshConnectionGrace"/> from the last accept), and the
/// kept-alive ones a moment to send their next (the engine answers it with Connection: close), and only then
/// lets Kestrel stop. The lean engine does the same in its sweep.
/// </summary>
internal sealed class GracefulStopTransport(IConnectionListenerFactory inner) : IConnectionListenerFactory
{
    /// <summary>How long after its accept a connection that has sent nothing may still send its first request.</summary>
    public static readonly TimeSpan FreshConnectionGrace = TimeSpan.FromSeconds(2);

    private readonly List<Listener> _listeners = [];
    /// <summary>Environment.TickCount64 at the last accept; 0 before the first.</summary>
    private long _lastAccept;
    private int _openConnections;

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var listener = new Listener(await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false), this);
        lock (_listeners)
        {
            _listeners.Add(listener);
        }
        return listener;
    }

    /// <summary>Stops accepting: Kestrel's sockets for the listeners close (they do not own the descriptors).</summary>
    public async Task UnbindAsync()
    {
        Listener[] listeners;
        lock (_listeners)
        {
            listeners = [.. _listeners];
        }
        foreach (Listener listener in listeners)
        {
            await listener.UnbindAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// After <see cref="UnbindAsync"/>: waits until every connection has closed, or until <paramref name="idleGrace"/> has
    /// passed and the last accepted connection had its moment (<see cref="FreshConnectionGrace"/>); at most <paramref name="limit"/>.
    /// </summary>
    public async Task WaitForConnectionsAsync(TimeSpan idleGrace, TimeSpan limit)
    {
        long start = Environment.TickCount64;
        long lastAccept = Volatile.Read(ref _lastAccept);
        long until = Math.Max(start + (long)idleGrace.TotalMilliseconds, lastAccept + (long)FreshConnectionGrace.TotalMilliseconds);
        until = Math.Min(until, start + (long)limit.TotalMilliseconds);
        while (Volatile.Read(ref _openConnections) > 0 && Environment.TickCount64 < until)
        {
            await Task.Delay(20).ConfigureAwait(false);
        }
    }

    private sealed class Listener(IConnectionListener inner, GracefulStopTransport owner) : IConnectionListener
    {
        private int _unbound;

        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            ConnectionContext? connection = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            if (connection is not null)
            {
                Volatile.Write(ref owner._lastAccept, Environment.TickCount64);
                Interlocked.Increment(ref owner._openConnections);
                connection.ConnectionClosed.Register(static state => Interlocked.Decrement(ref ((GracefulStopTransport)state!)._openConnections), owner);
            }
            return connection;
        }

        /// <summary>Once: by the engine's stop first, and again by Kestrel's.</summary>
        public ValueTask UnbindAsync(CancellationToken cancellationToken = default) =>
            Interlocked.Exchange(ref _unbound, 1) == 0 ? inner.UnbindAsync(cancellationToken) : ValueTask.CompletedTask;

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
