using System.Net;
using System.Net.Sockets;
using Osprey.Cli;

namespace Osprey.Supervision;

/// <summary>An error binding a listener; its message is the one line the user sees.</summary>
public sealed class ListenerException(string message) : Exception(message);

/// <summary>
/// Binds every --bind address before Python starts, so a port in use fails fast and the sockets
/// can be handed to whichever engine serves them.
/// </summary>
public static class Listeners
{
    private const int SOL_SOCKET = 1;
    private const int SO_REUSEADDR = 2;
    private const int SO_REUSEPORT = 15;

    public static IReadOnlyList<Socket> Bind(IReadOnlyList<BindAddress> binds, int backlog)
    {
        var sockets = new List<Socket>();
        try
        {
            foreach (BindAddress bind in binds)
            {
                sockets.Add(BindOne(bind, backlog, reusePort: false, listen: true));
            }
            return sockets;
        }
        catch
        {
            foreach (Socket socket in sockets)
            {
                socket.Dispose();
            }
            throw;
        }
    }

    /// <summary>
    /// Binds one listener. With <paramref name="reusePort"/> a TCP socket joins the port's SO_REUSEPORT group,
    /// so that the master can open one per worker slot and the kernel spreads connections over them. Without
    /// <paramref name="listen"/> the socket is only bound: the master calls listen() when the first worker that
    /// will accept on it has loaded the application, so that nobody connects before, and a slot that has
    /// never had a worker takes no share of the connections.
    /// </summary>
    internal static Socket BindOne(BindAddress bind, int backlog, bool reusePort, bool listen, bool probeInUse = false)
    {
        switch (bind)
        {
            case BindAddress.Tcp tcp:
            {
                var socket = new Socket(tcp.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                    if (reusePort)
                    {
                        socket.SetRawSocketOption(SOL_SOCKET, SO_REUSEPORT, [1, 0, 0, 0]);
                    }
                    if (tcp.Address.AddressFamily == AddressFamily.InterNetworkV6 && tcp.Address.Equals(IPAddress.IPv6Any))
                    {
                        // [::] serves IPv4 too, as gunicorn's does on Linux.
                        socket.DualMode = true;
                    }
                    if (probeInUse)
                    {
                        ProbeFree(tcp);
                    }
                    socket.Bind(new IPEndPoint(tcp.Address, tcp.Port));
                    if (listen) socket.Listen(backlog);
                    return socket;
                }
                catch (SocketException e)
                {
                    socket.Dispose();
                    throw new ListenerException(e.SocketErrorCode switch
                    {
                        SocketError.AddressAlreadyInUse => $"Connection in use: {tcp.Original} (address already in use)",
                        SocketError.AddressNotAvailable => $"cannot bind {tcp.Original}: the address is not on this machine",
                        SocketError.AccessDenied => $"cannot bind {tcp.Original}: permission denied (ports below 1024 need root)",
                        _ => $"cannot bind {tcp.Original}: {e.Message}",
                    });
                }
            }
            case BindAddress.Unix unix:
            {
                ClearSocketPath(unix);
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    socket.Bind(new UnixDomainSocketEndPoint(unix.Path));
                    if (listen) socket.Listen(backlog);
                    return socket;
                }
                catch (SocketException e)
                {
                    socket.Dispose();
                    throw new ListenerException($"cannot bind {unix.Original}: {e.Message}");
                }
            }
            case BindAddress.FileDescriptor fd:
                // .NET reports a closed descriptor as "Socket operation on non-socket".
                if (!Posix.IsOpen(fd.Fd))
                {
                    throw new ListenerException($"fd://{fd.Fd} is not an open file descriptor");
                }
                try
                {
                    return new Socket(new SafeSocketHandle(fd.Fd, ownsHandle: true));
                }
                catch (Exception e) when (e is SocketException or ArgumentException)
                {
                    throw new ListenerException($"fd://{fd.Fd} is not a usable listening socket: {e.Message}");
                }
            default:
                throw new ListenerException($"unsupported bind address {bind.Original}");
        }
    }

    /// <summary>
    /// SO_REUSEPORT would let us join the group of another server of the same user already on the port, and
    /// silently share its traffic. A plain bind (which no existing socket's SO_REUSEPORT admits) finds out first;
    /// only for the first slot, since later ones must join the group the first one made.
    /// </summary>
    private static void ProbeFree(BindAddress.Tcp tcp)
    {
        if (tcp.Port == 0)
        {
            return;
        }
        using var probe = new Socket(tcp.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        // SO_REUSEADDR alone (connections in TIME_WAIT do not make the port "in use"). Not through
        // SocketOptionName.ReuseAddress: on Linux .NET sets SO_REUSEPORT with it, and a probe in the
        // port's SO_REUSEPORT group would not see another Osprey (same user) listening there.
        probe.SetRawSocketOption(SOL_SOCKET, SO_REUSEADDR, [1, 0, 0, 0]);
        if (tcp.Address.AddressFamily == AddressFamily.InterNetworkV6 && tcp.Address.Equals(IPAddress.IPv6Any))
        {
            probe.DualMode = true;
        }
        probe.Bind(new IPEndPoint(tcp.Address, tcp.Port));
    }

    /// <summary>
    /// A socket file left by a server that died (kill -9, the OOM killer) would make bind fail and the
    /// service unable to start again: it is removed when nothing accepts on it (connect is refused). A
    /// socket someone listens on is an error, and so is anything that is not a socket, which gunicorn
    /// refuses to remove too. (gunicorn removes even a live socket; taking the path from a running
    /// server leaves it serving nobody.)
    /// </summary>
    private static void ClearSocketPath(BindAddress.Unix unix)
    {
        switch (Posix.KindOf(unix.Path))
        {
            case Posix.PathKind.Missing:
                // bind reports a missing directory as EADDRNOTAVAIL ("Cannot assign requested address").
                string? directory = Path.GetDirectoryName(Path.GetFullPath(unix.Path));
                if (directory is not null && !Directory.Exists(directory))
                {
                    throw new ListenerException($"cannot bind {unix.Original}: directory {directory} does not exist");
                }
                return;
            case Posix.PathKind.Other:
                throw new ListenerException($"cannot bind {unix.Original}: {unix.Path} exists and is not a socket");
            case Posix.PathKind.Socket:
                break;
            default:
                // Cannot tell (no statx, no permission): bind says what is wrong.
                return;
        }
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        // Non-blocking: a live server whose queue is full must not hold the start-up here.
        probe.Blocking = false;
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(unix.Path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            try
            {
                File.Delete(unix.Path);
                return;
            }
            catch (Exception d) when (d is IOException or UnauthorizedAccessException)
            {
                throw new ListenerException($"cannot bind {unix.Original}: cannot remove the stale socket file: {d.Message}");
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is not (SocketError.WouldBlock or SocketError.InProgress))
        {
            throw new ListenerException($"cannot bind {unix.Original}: a socket file is there and cannot be checked: {e.Message}");
        }
        throw new ListenerException($"Connection in use: {unix.Original} (another server is listening there)");
    }

    /// <summary>The URL-ish text gunicorn logs for a listener.</summary>
    public static string Describe(BindAddress bind, bool tls) => bind switch
    {
        BindAddress.Tcp tcp => tcp.Address.AddressFamily == AddressFamily.InterNetworkV6
            ? $"{(tls ? "https" : "http")}://[{tcp.Address}]:{tcp.Port}"
            : $"{(tls ? "https" : "http")}://{tcp.Address}:{tcp.Port}",
        BindAddress.Unix unix => $"unix:{unix.Path}",
        BindAddress.FileDescriptor fd => $"fd://{fd.Fd}",
        _ => bind.Original,
    };
}
