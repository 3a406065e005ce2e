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
                // A socket file left by a previous run that died would make bind fail: replace it.
                if (File.Exists(unix.Path) && (File.GetAttributes(unix.Path) & FileAttributes.Normal) == 0)
                {
                    TryDeleteStaleSocket(unix.Path);
                }
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

    private static void TryDeleteStaleSocket(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            throw new ListenerException($"Connection in use: unix:{path} (another server is listening there)");
        }
        catch (SocketException)
        {
            File.Delete(path);
        }
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
