using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Osprey.Supervision;

/// <summary>
/// Keeps new connections away from the listening sockets of retiring worker slots (TTOU, or a reload to fewer
/// workers). The kernel spreads a port's connections over every socket of its SO_REUSEPORT group, and a socket
/// leaves the group only when it is closed, which resets the connections still queued on it: without steering,
/// every connection hashed to a retiring slot between its worker's last accept and the close was lost.
///
/// A classic BPF program attached to the group (SO_ATTACH_REUSEPORT_CBPF) picks the socket instead: a random
/// one of the active slots, by its index in the group. The kernel numbers a group's sockets in the order of
/// their listen() calls and, when one closes, moves the last into its place (socket(7)); the master makes
/// every listen() call and every final close, so it can follow that numbering. With no slot retiring, no
/// program is attached and the kernel's own hash spreads the load.
///
/// With --reuse-port other processes may have sockets in the group too: its numbering is then not the
/// master's to follow, so no program is attached (a retiring slot's queued connections may be reset).
/// </summary>
internal sealed class ReusePortSteering(bool sharedWithOthers)
{
    private const int SOL_SOCKET = 1;
    private const int SO_ATTACH_REUSEPORT_CBPF = 51;
    private const int SO_DETACH_REUSEPORT_BPF = 68;
    /// <summary>BPF_MAXINSNS: a program steering to more slots than this allows is not attempted.</summary>
    private const int MaxInstructions = 4096;

    /// <summary>The slots whose sockets are in the group, at their index in it.</summary>
    private readonly List<int> _order = [];
    private bool _attached;
    private bool _unsupported = sharedWithOthers;

    /// <summary>Whether retiring slots can be steered away from (false after the kernel refused a program).</summary>
    public bool Available => !_unsupported;

    public bool IsListening(int slot) => _order.Contains(slot);

    /// <summary>The listening slots in the order their sockets joined the groups (their index in each).</summary>
    public IReadOnlyList<int> GroupOrder => _order;

    /// <summary>The master called listen() on the slot's sockets: they joined the end of their groups.</summary>
    public void Joined(int slot) => _order.Add(slot);

    /// <summary>The slot's sockets were closed for good: the group's last socket took their index.</summary>
    public void Left(int slot)
    {
        int index = _order.IndexOf(slot);
        if (index < 0)
        {
            return;
        }
        _order[index] = _order[^1];
        _order.RemoveAt(_order.Count - 1);
    }

    /// <summary>
    /// Sends new connections only to the sockets of active slots. <paramref name="sockets"/> gives a slot's
    /// sockets (null entries are binds that are not per-slot); the program is attached through the first
    /// member of each group, and every member shares it. Returns an error to log, or null.
    /// </summary>
    public string? Steer(Func<int, bool> isActive, Func<int, Socket?[]> sockets)
    {
        if (_unsupported || _order.Count == 0)
        {
            return null;
        }
        var indices = new List<int>(_order.Count);
        for (int i = 0; i < _order.Count; i++)
        {
            if (isActive(_order[i]))
            {
                indices.Add(i);
            }
        }
        // No active slot listening (its worker is still booting): spreading over all beats refusing all.
        bool steer = indices.Count > 0 && indices.Count < _order.Count && 2 * indices.Count + 1 <= MaxInstructions;
        if (!steer && !_attached)
        {
            return null;
        }
        byte[]? program = steer ? Program(indices) : null;
        bool attached = program is not null;
        try
        {
            foreach (Socket? socket in sockets(_order[0]))
            {
                if (socket is null)
                {
                    continue;
                }
                if (program is not null)
                {
                    Attach(socket, program);
                    continue;
                }
                try
                {
                    socket.SetRawSocketOption(SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, [0, 0, 0, 0]);
                }
                catch (SocketException)
                {
                    // Before Linux 5.3 a program cannot be detached: one spreading over every socket replaces it.
                    Attach(socket, Program(Enumerable.Range(0, _order.Count).ToList()));
                    attached = true;
                }
            }
            _attached = attached;
            return null;
        }
        catch (SocketException e)
        {
            _unsupported = true;
            return $"cannot steer connections away from retiring workers (SO_ATTACH_REUSEPORT_CBPF: {e.Message}); connections queued on a retiring worker's socket may be reset";
        }
    }

    /// <summary>
    /// <c>A = random % n</c>, then a jump table from A to the group index of the A-th active slot:
    /// <c>jeq #i, 0, 1; ret #index</c> per slot, the last one returned unconditionally.
    /// </summary>
    internal static byte[] Program(IReadOnlyList<int> indices)
    {
        const ushort LdWordAbs = 0x20, AluModK = 0x94, JeqK = 0x15, RetK = 0x06;
        const uint SkfAdRandom = unchecked((uint)(-0x1000 + 56));
        var instructions = new List<(ushort Code, byte True, byte False, uint K)>
        {
            (LdWordAbs, 0, 0, SkfAdRandom),
            (AluModK, 0, 0, (uint)indices.Count),
        };
        for (int i = 0; i < indices.Count - 1; i++)
        {
            instructions.Add((JeqK, 0, 1, (uint)i));
            instructions.Add((RetK, 0, 0, (uint)indices[i]));
        }
        instructions.Add((RetK, 0, 0, (uint)indices[^1]));

        // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }, in the machine's byte order.
        var program = new byte[instructions.Count * 8];
        for (int i = 0; i < instructions.Count; i++)
        {
            Span<byte> slot = program.AsSpan(i * 8, 8);
            MemoryMarshal.Write(slot, instructions[i].Code);
            slot[2] = instructions[i].True;
            slot[3] = instructions[i].False;
            MemoryMarshal.Write(slot[4..], instructions[i].K);
        }
        return program;
    }

    private static void Attach(Socket socket, byte[] program)
    {
        // struct sock_fprog { u16 len; struct sock_filter *filter; }: the kernel copies the program during the call.
        GCHandle pinned = GCHandle.Alloc(program, GCHandleType.Pinned);
        try
        {
            Span<byte> fprog = stackalloc byte[2 * IntPtr.Size];
            fprog.Clear();
            MemoryMarshal.Write(fprog, (ushort)(program.Length / 8));
            MemoryMarshal.Write(fprog[IntPtr.Size..], pinned.AddrOfPinnedObject());
            socket.SetRawSocketOption(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog);
        }
        finally
        {
            pinned.Free();
        }
    }
}
