using System.Runtime.InteropServices;

namespace Osprey.Http.Lean;

/// <summary>
/// The lean engine's only door to the kernel: epoll, accept4, recv, sendmsg, sendfile, poll,
/// eventfd. Every pointer stays in this file; callers pass spans and get byte counts or a
/// negative errno back, so a failed call costs no exception.
/// </summary>
internal static unsafe partial class Syscalls
{
    private const string Libc = "libc";

    public const int EAGAIN = 11;
    public const int EINTR = 4;
    public const int EPIPE = 32;
    public const int ECONNRESET = 104;

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLEXCLUSIVE = 1u << 28;
    public const uint EPOLLET = 1u << 31;

    private const int EPOLL_CLOEXEC = 0x80000;
    private const int EPOLL_CTL_ADD = 1;
    private const int EPOLL_CTL_DEL = 2;
    private const int EPOLL_CTL_MOD = 3;
    private const int SOCK_NONBLOCK = 0x800;
    private const int SOCK_CLOEXEC = 0x80000;
    private const int EFD_NONBLOCK = 0x800;
    private const int EFD_CLOEXEC = 0x80000;
    private const int MSG_NOSIGNAL = 0x4000;
    private const int MSG_DONTWAIT = 0x40;
    private const int IPPROTO_TCP = 6;
    private const int TCP_NODELAY = 1;
    private const short POLLIN = 0x001;
    private const short POLLOUT = 0x004;
    private const int F_GETFL = 3;
    private const int F_SETFL = 4;
    private const int O_NONBLOCK = 0x800;
    public const int SHUT_WR = 1;
    public const int SHUT_RDWR = 2;

    // x86-64 packs epoll_event to 12 bytes (events, then an unaligned 64-bit data); other
    // architectures align data to 8, giving 16.
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;
    private static readonly int s_epollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport(Libc, EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport(Libc, EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtlNative(int epfd, int op, int fd, byte* ev);

    [LibraryImport(Libc, EntryPoint = "epoll_wait", SetLastError = true)]
    private static partial int EpollWaitNative(int epfd, byte* events, int maxEvents, int timeout);

    [LibraryImport(Libc, EntryPoint = "accept4", SetLastError = true)]
    private static partial int Accept4Native(int fd, byte* address, uint* addressLength, int flags);

    [LibraryImport(Libc, EntryPoint = "getsockname", SetLastError = true)]
    private static partial int GetSockNameNative(int fd, byte* address, uint* addressLength);

    [LibraryImport(Libc, EntryPoint = "recv", SetLastError = true)]
    private static partial nint RecvNative(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsgNative(int fd, MsgHdr* message, int flags);

    [LibraryImport(Libc, EntryPoint = "sendfile64", SetLastError = true)]
    private static partial nint SendFileNative(int outFd, int inFd, long* offset, nuint count);

    [LibraryImport(Libc, EntryPoint = "poll", SetLastError = true)]
    private static partial int PollNative(PollFd* fds, nuint count, int timeout);

    [LibraryImport(Libc, EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFdNative(uint initial, int flags);

    [LibraryImport(Libc, EntryPoint = "read", SetLastError = true)]
    private static partial nint ReadNative(int fd, byte* buffer, nuint count);

    [LibraryImport(Libc, EntryPoint = "write", SetLastError = true)]
    private static partial nint WriteNative(int fd, byte* buffer, nuint count);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    private static partial int CloseNative(int fd);

    [LibraryImport(Libc, EntryPoint = "shutdown", SetLastError = true)]
    private static partial int ShutdownNative(int fd, int how);

    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOptNative(int fd, int level, int name, int* value, uint length);

    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlNative(int fd, int command, int argument);

    [LibraryImport(Libc, EntryPoint = "dup", SetLastError = true)]
    private static partial int DupNative(int fd);

    private static int Errno() => Marshal.GetLastPInvokeError();

    /// <summary>The result, or minus errno.</summary>
    private static int Check(int result) => result >= 0 ? result : -Errno();

    private static long Check(nint result) => result >= 0 ? result : -Errno();

    public static int EpollCreate() => Check(EpollCreate1(EPOLL_CLOEXEC));

    public static int EpollAdd(int epoll, int fd, uint events, ulong data) => EpollControl(epoll, EPOLL_CTL_ADD, fd, events, data);

    public static int EpollModify(int epoll, int fd, uint events, ulong data) => EpollControl(epoll, EPOLL_CTL_MOD, fd, events, data);

    public static int EpollDelete(int epoll, int fd) => EpollControl(epoll, EPOLL_CTL_DEL, fd, 0, 0);

    private static int EpollControl(int epoll, int op, int fd, uint events, ulong data)
    {
        byte* ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + s_epollDataOffset) = data;
        return Check(EpollCtlNative(epoll, op, fd, ev));
    }

    /// <summary>Waits for events into <paramref name="events"/> (a buffer of <see cref="EpollEventSize"/>-byte records).</summary>
    public static int EpollWait(int epoll, Span<byte> events, int timeoutMs)
    {
        fixed (byte* p = events)
        {
            return Check(EpollWaitNative(epoll, p, events.Length / EpollEventSize, timeoutMs));
        }
    }

    public static uint EventMask(ReadOnlySpan<byte> events, int index) =>
        MemoryMarshal.Read<uint>(events[(index * EpollEventSize)..]);

    public static ulong EventData(ReadOnlySpan<byte> events, int index) =>
        MemoryMarshal.Read<ulong>(events[(index * EpollEventSize + s_epollDataOffset)..]);

    /// <summary>Accepts a connection as a non-blocking, close-on-exec socket; <paramref name="address"/> receives the peer's sockaddr.</summary>
    public static int Accept(int listener, Span<byte> address, out int addressLength)
    {
        fixed (byte* p = address)
        {
            uint length = (uint)address.Length;
            int fd = Check(Accept4Native(listener, p, &length, SOCK_NONBLOCK | SOCK_CLOEXEC));
            addressLength = (int)length;
            return fd;
        }
    }

    public static int GetSockName(int fd, Span<byte> address, out int addressLength)
    {
        fixed (byte* p = address)
        {
            uint length = (uint)address.Length;
            int result = Check(GetSockNameNative(fd, p, &length));
            addressLength = (int)length;
            return result;
        }
    }

    public static int SetNoDelay(int fd)
    {
        int one = 1;
        return Check(SetSockOptNative(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int)));
    }

    public static int SetNonBlocking(int fd)
    {
        int flags = FcntlNative(fd, F_GETFL, 0);
        return flags < 0 ? -Errno() : Check(FcntlNative(fd, F_SETFL, flags | O_NONBLOCK));
    }

    public static long Receive(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return Check(RecvNative(fd, p, (nuint)buffer.Length, MSG_DONTWAIT));
        }
    }

    /// <summary>Gathers up to four buffers into one non-blocking send (empty ones are skipped). SIGPIPE is never raised.</summary>
    public static long Send(int fd, ReadOnlySpan<byte> a, ReadOnlySpan<byte> b = default, ReadOnlySpan<byte> c = default, ReadOnlySpan<byte> d = default)
    {
        fixed (byte* pa = a, pb = b, pc = c, pd = d)
        {
            IoVec* iov = stackalloc IoVec[4];
            int count = 0;
            if (!a.IsEmpty) { iov[count++] = new IoVec { Base = pa, Length = (nuint)a.Length }; }
            if (!b.IsEmpty) { iov[count++] = new IoVec { Base = pb, Length = (nuint)b.Length }; }
            if (!c.IsEmpty) { iov[count++] = new IoVec { Base = pc, Length = (nuint)c.Length }; }
            if (!d.IsEmpty) { iov[count++] = new IoVec { Base = pd, Length = (nuint)d.Length }; }
            if (count == 0)
            {
                return 0;
            }
            var message = new MsgHdr { Iov = iov, IovLength = (nuint)count };
            return Check(SendMsgNative(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT));
        }
    }

    /// <summary>Sends the given segments (at most 16 per call) in one non-blocking sendmsg.</summary>
    public static long SendSegments(int fd, ReadOnlySpan<ArraySegment<byte>> segments)
    {
        int count = Math.Min(segments.Length, 16);
        IoVec* iov = stackalloc IoVec[16];
        GCHandle* pins = stackalloc GCHandle[16];
        for (int i = 0; i < count; i++)
        {
            pins[i] = GCHandle.Alloc(segments[i].Array, GCHandleType.Pinned);
            iov[i] = new IoVec { Base = (byte*)pins[i].AddrOfPinnedObject() + segments[i].Offset, Length = (nuint)segments[i].Count };
        }
        try
        {
            var message = new MsgHdr { Iov = iov, IovLength = (nuint)count };
            return Check(SendMsgNative(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT));
        }
        finally
        {
            for (int i = 0; i < count; i++)
            {
                pins[i].Free();
            }
        }
    }

    public static long SendFile(int socket, int file, ref long offset, long count)
    {
        long position = offset;
        long result = Check(SendFileNative(socket, file, &position, (nuint)count));
        offset = position;
        return result;
    }

    /// <summary>Waits until the socket is readable (or writable); true when it is, false on timeout.</summary>
    public static bool Poll(int fd, bool forWrite, int timeoutMs)
    {
        var pollFd = new PollFd { Fd = fd, Events = forWrite ? POLLOUT : POLLIN };
        while (true)
        {
            int result = PollNative(&pollFd, 1, timeoutMs);
            if (result >= 0)
            {
                return result > 0;
            }
            if (Errno() != EINTR)
            {
                return true;
            }
        }
    }

    public static int CreateEventFd() => Check(EventFdNative(0, EFD_NONBLOCK | EFD_CLOEXEC));

    public static void SignalEventFd(int fd)
    {
        ulong one = 1;
        WriteNative(fd, (byte*)&one, sizeof(ulong));
    }

    public static void DrainEventFd(int fd)
    {
        ulong value;
        ReadNative(fd, (byte*)&value, sizeof(ulong));
    }

    public static int Dup(int fd) => Check(DupNative(fd));

    public static int Shutdown(int fd, int how) => Check(ShutdownNative(fd, how));

    public static int Close(int fd) => Check(CloseNative(fd));
}
