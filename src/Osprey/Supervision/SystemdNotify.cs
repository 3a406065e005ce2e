using System.Net.Sockets;
using System.Text;
using Osprey.Logging;

namespace Osprey.Supervision;

/// <summary>
/// systemd's readiness protocol (sd_notify), for units with <c>Type=notify</c>, as gunicorn's arbiter
/// speaks it: READY=1 once the first worker serves, STOPPING=1 on a stop, and MAINPID when a master
/// started by USR2 takes over (which systemd accepts with <c>NotifyAccess=all</c>). A datagram to the
/// unix socket named by NOTIFY_SOCKET ('@' for the abstract namespace); nothing without it.
/// </summary>
internal static class SystemdNotify
{
    private static string? s_socket;

    /// <summary>Takes NOTIFY_SOCKET out of the environment, so that workers and their children do not use it.</summary>
    public static void TakeSocket()
    {
        s_socket = Environment.GetEnvironmentVariable("NOTIFY_SOCKET") is { Length: > 0 } path ? path : null;
        Posix.Unsetenv("NOTIFY_SOCKET");
    }

    /// <summary>The socket for a master started by USR2, which must be able to notify too.</summary>
    public static string? Socket => s_socket;

    public static void Send(string state)
    {
        if (s_socket is not { } path)
        {
            return;
        }
        try
        {
            using var socket = new System.Net.Sockets.Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            string address = path[0] == '@' ? "\0" + path[1..] : path;
            socket.SendTo(Encoding.UTF8.GetBytes(state), new UnixDomainSocketEndPoint(address));
        }
        catch (SocketException e)
        {
            Log.Debug($"sd_notify to {path}: {e.Message}");
        }
    }
}
