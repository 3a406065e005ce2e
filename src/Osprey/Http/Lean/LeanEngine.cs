using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Osprey.Logging;
using Osprey.Wsgi;

namespace Osprey.Http.Lean;

/// <summary>
/// Osprey's own cleartext HTTP/1.1 engine: one event-loop thread on epoll, requests parsed by
/// Kestrel's <c>HttpParser</c>, no async state machines and no thread-pool hop per request.
/// The loop accepts, reads and parses; complete requests go to the Python threads, which write
/// their responses straight to the socket; only a response the socket cannot take at once, a
/// pipelined request, or a close comes back to the loop. A slow client therefore costs a
/// connection object, never a thread.
/// </summary>
public sealed class LeanEngine : IHttpEngine
{
    private const ulong ListenerTag = 1UL << 63;
    private const ulong WakeTag = 1UL << 62;
    private const int AcceptBatch = 64;
    /// <summary>At most this many connections are taken from a listener's queue on stopping (see StopAcceptingOnLoop).</summary>
    private const int FinalAcceptLimit = 1024;
    private const int LingerMs = 2_000;
    /// <summary>A finished response the client reads none of for this long is abandoned (the loop's side of WaitForDrain's stall limit).</summary>
    private const int ResponseStallMs = 30_000;
    /// <summary>On stop, how long a connection that has not sent its first request yet still has to send it.</summary>
    private const int FreshConnectionStopGraceMs = 2_000;
    /// <summary>
    /// On stop, how long a kept-alive connection may stay idle before it is closed. A client that reuses connections
    /// and does not retry (wrk, or a proxy with a POST) sends its next request right after the last response: that
    /// request gets its answer with Connection: close instead of meeting the close. Only a connection idle for longer
    /// is closed, and the close of an idle connection is what HTTP/1.1 clients retry on (RFC 9112 §9.3.1).
    /// </summary>
    private const int StopIdleGraceMs = 1_000;
    /// <summary>The sweep's period while stopping, so that idle connections close soon after StopIdleGraceMs.</summary>
    private const int StoppingSweepMs = 50;

    private readonly int _epoll;
    private readonly int _wakeFd;
    private readonly Socket[] _listeners;
    private readonly HttpSettings _settings;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<(LeanConnection Connection, LoopAction Action)> _posted = new();
    private readonly Stack<LeanConnection> _free = new();
    private readonly AddressNames _remoteNames = new();
    private readonly AddressNames _localNames = new();
    private readonly ManualResetEventSlim _drained = new();
    private LeanConnection?[] _byFd = new LeanConnection?[1024];
    private uint _generation;
    private long _nextSweep;
    private volatile bool _stopAccepting;
    private volatile bool _stopNow;
    private bool _listenersRemoved;
    // Dekker-style pair that spares Post an eventfd write (a syscall, costly on this kind of VM)
    // whenever the loop is awake: it drains the posted queue after every batch of events anyway.
    // _loopSleeping is set before the loop's last look at the queue; Post looks at it after enqueuing.
    private int _loopSleeping;
    private int _wakeSignalled;
    private int _openConnections;
    /// <summary>At --max-connections the listeners leave epoll, so new clients wait in the kernel's backlog, not in our memory.</summary>
    private bool _acceptPaused;

    internal PythonWorkers Workers { get; }

    /// <summary>Set when the engine stops accepting: responses from then on end their connection.</summary>
    internal bool IsStopping => _stopAccepting;

    private LeanEngine(IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings)
    {
        _listeners = [.. listeners];
        Workers = workers;
        _settings = settings;
        _epoll = Syscalls.EpollCreate();
        _wakeFd = Syscalls.CreateEventFd();
        if (_epoll < 0 || _wakeFd < 0)
        {
            throw new IOException($"cannot create the event loop (errno {-Math.Min(_epoll, _wakeFd)})");
        }
        Syscalls.EpollAdd(_epoll, _wakeFd, Syscalls.EPOLLIN, WakeTag);
        for (int i = 0; i < _listeners.Length; i++)
        {
            int fd = (int)_listeners[i].Handle;
            Syscalls.SetNonBlocking(fd);
            // EPOLLEXCLUSIVE: with several worker processes on one socket, a connection wakes one of them.
            Syscalls.EpollAdd(_epoll, fd, Syscalls.EPOLLIN | Syscalls.EPOLLEXCLUSIVE, ListenerTag | (uint)i);
        }
        _thread = new Thread(Run) { IsBackground = true, Name = "osprey-loop" };
    }

    public static LeanEngine Start(IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings)
    {
        var engine = new LeanEngine(listeners, workers, settings);
        engine._thread.Start();
        return engine;
    }

    // ---------------------------------------------------------------- called from any thread

    internal void Post(LeanConnection connection, LoopAction action)
    {
        _posted.Enqueue((connection, action));
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _loopSleeping) == 1 && Interlocked.Exchange(ref _wakeSignalled, 1) == 0)
        {
            Syscalls.SignalEventFd(_wakeFd);
        }
    }

    // ---------------------------------------------------------------- loop thread

    private void Run()
    {
        ServingThreads.UseBatchScheduling();
        byte[] events = new byte[Syscalls.EpollEventSize * 256];
        Span<byte> address = stackalloc byte[128];
        while (!_stopNow)
        {
            Volatile.Write(ref _loopSleeping, 1);
            Interlocked.MemoryBarrier();
            int count = Syscalls.EpollWait(_epoll, events, !_posted.IsEmpty ? 0 : _stopAccepting ? StoppingSweepMs : 1000);
            Volatile.Write(ref _loopSleeping, 0);
            for (int i = 0; i < count; i++)
            {
                ulong data = Syscalls.EventData(events, i);
                uint mask = Syscalls.EventMask(events, i);
                if ((data & ListenerTag) != 0)
                {
                    Accept(_listeners[(int)(data & 0xFFFF)], address, AcceptBatch);
                }
                else if (data == WakeTag)
                {
                    Syscalls.DrainEventFd(_wakeFd);
                    Volatile.Write(ref _wakeSignalled, 0);
                }
                else
                {
                    OnConnectionEvent(data, mask);
                }
            }
            RunPosted();
            long now = Environment.TickCount64;
            if (now >= _nextSweep)
            {
                _nextSweep = now + (_stopAccepting ? StoppingSweepMs : 1000);
                HttpDate.Refresh();
                Sweep(now);
                AcceptMissedWakeups(address);
            }
            if (_stopAccepting)
            {
                StopAcceptingOnLoop(address);
            }
        }
        CloseAll();
    }

    /// <summary>
    /// The listeners are registered with EPOLLEXCLUSIVE, so a connection wakes the first of the processes
    /// sharing the socket whose loop is waiting, and no other. A worker that took the wakeup and never accepted
    /// (killed right after it) leaves the connection in the queue until the next one arrives, which may be
    /// never. A non-blocking accept once a second bounds that wait. (A stopping worker accepts what is queued:
    /// StopAcceptingOnLoop; one at --max-connections leaves epoll before it can be woken.)
    /// </summary>
    private void AcceptMissedWakeups(Span<byte> address)
    {
        if (_acceptPaused || _listenersRemoved || _stopAccepting)
        {
            return;
        }
        foreach (Socket listener in _listeners)
        {
            Accept(listener, address, AcceptBatch);
        }
    }

    /// <summary>Accepts up to <paramref name="limit"/> queued connections; stops early when told to stop, unless <paramref name="final"/>.</summary>
    private void Accept(Socket listener, Span<byte> address, int limit, bool final = false)
    {
        int listenerFd = (int)listener.Handle;
        for (int n = 0; n < limit && (final || !_stopAccepting); n++)
        {
            if (_settings.MaxConnections > 0 && _openConnections >= _settings.MaxConnections)
            {
                PauseAccepting();
                return;
            }
            int fd = Syscalls.Accept(listenerFd, address, out int addressLength);
            if (fd < 0)
            {
                if (fd != -Syscalls.EAGAIN && fd != -Syscalls.EINTR)
                {
                    // EMFILE and friends: log once per burst and let the backlog hold the rest.
                    Log.Warning($"accept failed: errno {-fd}");
                }
                return;
            }
            (string remote, int remotePort) = _remoteNames.Format(address[..addressLength]);
            string local = "";
            int localPort = 0;
            if (listener.AddressFamily != AddressFamily.Unix)
            {
                Syscalls.SetNoDelay(fd);
                if (Syscalls.GetSockName(fd, address, out int localLength) == 0)
                {
                    (local, localPort) = _localNames.Format(address[..localLength]);
                }
            }
            _openConnections++;
            LeanConnection connection = _free.Count > 0 ? _free.Pop() : new LeanConnection(this, _settings);
            bool expectProxyHeader = _settings.ProxyProtocol && _settings.ProxyAllowFrom.ContainsPeer(remote);
            connection.Open(fd, ++_generation, remote, remotePort, local, localPort, expectProxyHeader);
            if (fd >= _byFd.Length)
            {
                Array.Resize(ref _byFd, Math.Max(_byFd.Length * 2, fd + 1));
            }
            _byFd[fd] = connection;
            // Registered once, edge-triggered, for the connection's whole life: no epoll_ctl per
            // request. Whoever owns the connection reads until the socket is drained, and events
            // that arrive while a Python thread owns it are remembered (LeanConnection.OnEvent).
            Syscalls.EpollAdd(_epoll, fd, Syscalls.EPOLLIN | Syscalls.EPOLLOUT | Syscalls.EPOLLRDHUP | Syscalls.EPOLLET, connection.Token);
        }
    }

    internal static string FormatAddress(IPAddress address) =>
        (address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address).ToString();

    /// <summary>
    /// Formats socket addresses, giving back the previous string when the address repeats: the
    /// connections of one client (a proxy, a load balancer) then share one string, which the
    /// environ builder recognises by reference, and an accept allocates none.
    /// </summary>
    private sealed class AddressNames
    {
        private readonly byte[] _last = new byte[16];
        private int _lastLength = -1;
        private string _lastText = "";

        public (string Address, int Port) Format(ReadOnlySpan<byte> sockaddr)
        {
            if (sockaddr.Length < 2)
            {
                return ("", 0);
            }
            ushort family = BinaryPrimitives.ReadUInt16LittleEndian(sockaddr);
            ReadOnlySpan<byte> bytes = family switch
            {
                2 when sockaddr.Length >= 8 => sockaddr[4..8],
                10 when sockaddr.Length >= 24 => sockaddr[8..24],
                _ => default,
            };
            if (bytes.IsEmpty)
            {
                return ("", 0);
            }
            int port = BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]);
            if (bytes.Length != _lastLength || !bytes.SequenceEqual(_last.AsSpan(0, _lastLength)))
            {
                _lastText = FormatAddress(new IPAddress(bytes));
                bytes.CopyTo(_last);
                _lastLength = bytes.Length;
            }
            return (_lastText, port);
        }
    }

    private void OnConnectionEvent(ulong token, uint mask)
    {
        int fd = (int)(uint)token;
        LeanConnection? connection = fd < _byFd.Length ? _byFd[fd] : null;
        if (connection is null || connection.Token != token)
        {
            return;
        }
        connection.OnEvent(mask);
    }

    private void RunPosted()
    {
        while (_posted.TryDequeue(out (LeanConnection Connection, LoopAction Action) item))
        {
            LeanConnection connection = item.Connection;
            if (connection.State == ConnectionState.Closed)
            {
                continue;
            }
            switch (item.Action)
            {
                case LoopAction.Read:
                    // A Python thread handed the connection back; the loop may already have
                    // taken it again (and dispatched a new request) through a socket event.
                    if (connection.State is ConnectionState.ReadingHead or ConnectionState.ReadingBody)
                    {
                        connection.OnReadable();
                    }
                    break;
                case LoopAction.Flush:
                    connection.FinishFlushing(onEvent: false);
                    break;
                case LoopAction.Stream:
                    connection.FlushStream();
                    break;
                case LoopAction.Linger:
                    connection.StartLingering();
                    break;
                default:
                    Close(connection);
                    break;
            }
        }
    }

    internal void Close(LeanConnection connection)
    {
        int fd = connection.Fd;
        if (fd < 0)
        {
            return;
        }
        _byFd[fd] = null;
        Syscalls.Close(fd);
        connection.Release();
        _free.Push(connection);
        _openConnections--;
        if (_acceptPaused && _openConnections < _settings.MaxConnections)
        {
            ResumeAccepting();
        }
    }

    private void PauseAccepting()
    {
        if (_acceptPaused || _listenersRemoved)
        {
            return;
        }
        _acceptPaused = true;
        foreach (Socket listener in _listeners)
        {
            Syscalls.EpollDelete(_epoll, (int)listener.Handle);
        }
    }

    private void ResumeAccepting()
    {
        _acceptPaused = false;
        if (_listenersRemoved)
        {
            return;
        }
        // Level-triggered: clients already waiting in the backlog wake the loop at once.
        for (int i = 0; i < _listeners.Length; i++)
        {
            Syscalls.EpollAdd(_epoll, (int)_listeners[i].Handle, Syscalls.EPOLLIN | Syscalls.EPOLLEXCLUSIVE, ListenerTag | (uint)i);
        }
    }

    /// <summary>Once a second (more often while stopping): idle keep-alive connections, stalled clients and lingering closes time out.</summary>
    private void Sweep(long now)
    {
        long keepAliveMs = (long)_settings.KeepAlive.TotalMilliseconds;
        long headerTimeoutMs = (long)_settings.HeaderTimeout.TotalMilliseconds;
        long graceMs = (long)HttpSettings.BodyRateGracePeriod.TotalMilliseconds;
        int minRate = _settings.MinRequestBodyRate;
        bool anyActive = false;
        for (int fd = 0; fd < _byFd.Length; fd++)
        {
            LeanConnection? connection = _byFd[fd];
            if (connection is null)
            {
                continue;
            }
            long idle = now - connection.LastProgress;
            switch (connection.State)
            {
                case ConnectionState.ReadingHead:
                    if (!connection.HasPartialRequest)
                    {
                        // A connection that has not sent its first request yet may have it on the way, and its
                        // client would not retry: it gets a longer moment than a kept-alive one.
                        bool closeForStop = _stopAccepting && idle > (connection.ServedRequest ? StopIdleGraceMs : FreshConnectionStopGraceMs);
                        if (closeForStop || idle > (connection.ServedRequest ? keepAliveMs : headerTimeoutMs))
                        {
                            Close(connection);
                        }
                        else if (_stopAccepting)
                        {
                            anyActive = true;
                        }
                        else if (idle >= 1000)
                        {
                            connection.ReleaseIdleInput();
                        }
                    }
                    else if (now - connection.HeadStarted > headerTimeoutMs)
                    {
                        // Measured from the head's first byte, not the last: a client trickling
                        // one byte a second must not hold the connection forever.
                        connection.Refuse(408);
                    }
                    else
                    {
                        anyActive = true;
                    }
                    break;
                case ConnectionState.ReadingBody:
                {
                    long elapsed = now - connection.BodyStarted;
                    if (minRate > 0 && elapsed > graceMs && connection.BodyBytesReceived < minRate * elapsed / 1000)
                    {
                        connection.Refuse(408);
                    }
                    else
                    {
                        anyActive = true;
                    }
                    break;
                }
                case ConnectionState.Flushing:
                    if (idle > ResponseStallMs)
                    {
                        Close(connection);
                    }
                    else
                    {
                        anyActive = true;
                    }
                    break;
                case ConnectionState.Lingering:
                    if (idle > LingerMs)
                    {
                        Close(connection);
                    }
                    break;
                case ConnectionState.Dispatched:
                    anyActive = true;
                    break;
            }
        }
        if (_stopAccepting && !anyActive)
        {
            _drained.Set();
        }
    }

    private void StopAcceptingOnLoop(Span<byte> address)
    {
        if (_listenersRemoved)
        {
            return;
        }
        _listenersRemoved = true;
        foreach (Socket listener in _listeners)
        {
            Syscalls.EpollDelete(_epoll, (int)listener.Handle);
        }
        // A connection whose wakeup this loop took just before the stop would wait in the queue for the next
        // arrival to wake a sibling (EPOLLEXCLUSIVE): this worker serves what is queued, in its drain. Once
        // out of epoll it takes no wakeup, so what arrives from now on wakes the siblings.
        if (!_acceptPaused)
        {
            foreach (Socket listener in _listeners)
            {
                Accept(listener, address, FinalAcceptLimit, final: true);
            }
        }
        // Only this worker's copies: the siblings and the master hold theirs. When every process has closed
        // its copy (a stop), a client that connects is refused at once instead of waiting in a dead backlog.
        foreach (Socket listener in _listeners)
        {
            listener.Dispose();
        }
        long now = Environment.TickCount64;
        _nextSweep = now + StoppingSweepMs;
        Sweep(now);
    }

    private void CloseAll()
    {
        for (int fd = 0; fd < _byFd.Length; fd++)
        {
            if (_byFd[fd] is LeanConnection connection && connection.State != ConnectionState.Dispatched)
            {
                Close(connection);
            }
        }
    }

    // ---------------------------------------------------------------- IHttpEngine

    public Task StopAsync(TimeSpan grace)
    {
        _stopAccepting = true;
        Syscalls.SignalEventFd(_wakeFd);
        // The sweep sets _drained once nothing is in flight; it runs at least once a second.
        _drained.Wait(grace);
        _stopNow = true;
        Syscalls.SignalEventFd(_wakeFd);
        _thread.Join(TimeSpan.FromSeconds(5));
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        if (!_thread.IsAlive)
        {
            Syscalls.Close(_epoll);
            Syscalls.Close(_wakeFd);
        }
        _drained.Dispose();
        return ValueTask.CompletedTask;
    }
}
