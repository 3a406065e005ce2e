using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Osprey.Cli;
using Osprey.Logging;

namespace Osprey.Supervision;

/// <summary>
/// USR2, gunicorn's upgrade on the fly: the master starts a new master (the executable now at its path, with
/// the same arguments) that inherits every listening socket, so that old and new workers accept from the very
/// same sockets, as gunicorn's do, and no connection is refused or reset in between. The new master writes its
/// pid to PIDFILE.2 while the old one lives; TERM to the old master then stops its workers gracefully, and the
/// new one, seeing its parent gone, takes PIDFILE over ("promoted"). If the new master fails to start, the old
/// one goes on serving. WINCH, for a --daemon master, stops its workers gracefully and keeps the master (a HUP
/// brings them back), as gunicorn's does.
/// </summary>
public sealed partial class Master
{
    private const string UpgradeFromVariable = "OSPREY_UPGRADE_FROM";
    private const string UpgradeListenersVariable = "OSPREY_UPGRADE_LISTENERS";
    private const int SIGUSR2 = Posix.SIGUSR2;
    private const int SIGWINCH = 28;

    /// <summary>The master this one replaces, while it lives; 0 otherwise.</summary>
    private int _upgradeParent;
    /// <summary>The new master started by USR2, until it exits.</summary>
    private Process? _upgradeChild;
    /// <summary>Sockets handed down by the master this one replaces, by bind as typed; taken as the binds are opened.</summary>
    private readonly Dictionary<string, int> _inheritedShared = new(StringComparer.Ordinal);
    /// <summary>Per TCP bind, the inherited sockets in the order they joined the port's SO_REUSEPORT group.</summary>
    private readonly Dictionary<string, int[]> _inheritedSlots = new(StringComparer.Ordinal);
    /// <summary>The pid file this master wrote: PIDFILE, or PIDFILE.2 while the master it replaces lives.</summary>
    private string? _pidFileWritten;
    /// <summary>The listeners came from systemd (LISTEN_FDS), not from --bind: a new master takes the same ones.</summary>
    private bool _socketActivated;

    /// <summary>Whether this process was started by a master's USR2, and the sockets it was handed.</summary>
    private static (int Parent, string? Listeners) ReadUpgradeVariables()
    {
        string? from = Environment.GetEnvironmentVariable(UpgradeFromVariable);
        return int.TryParse(from, NumberStyles.None, CultureInfo.InvariantCulture, out int parent) && parent == Posix.ParentProcessId
            ? (parent, Environment.GetEnvironmentVariable(UpgradeListenersVariable))
            : (0, null);
    }

    /// <summary>After a possible re-exec (which must see them again): workers and their children must not take them as meant for them.</summary>
    private static void ClearUpgradeVariables()
    {
        Posix.Unsetenv(UpgradeFromVariable);
        Posix.Unsetenv(UpgradeListenersVariable);
    }

    /// <summary>
    /// A master started under systemd socket activation hands its sockets down as they are, whatever --bind
    /// says (as gunicorn passes LISTEN_FDS on): the same fd:// binds for the new master, or null.
    /// </summary>
    private static IReadOnlyList<BindAddress>? ActivatedSocketsOfReplacedMaster(string? text)
    {
        var binds = new List<BindAddress>();
        foreach (string line in (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] fields = line.Split('\t');
            if (fields.Length == 3 && fields[0] == "activated")
            {
                int fd = int.Parse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture);
                binds.Add(new BindAddress.FileDescriptor($"fd://{fd}", fd));
            }
        }
        return binds.Count > 0 ? binds : null;
    }

    private void ReadInheritedListeners(string? text)
    {
        foreach (string line in (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] fields = line.Split('\t');
            if (fields.Length != 3)
            {
                continue;
            }
            string original = Encoding.UTF8.GetString(Convert.FromBase64String(fields[1]));
            int[] fds = [.. fields[2].Split(',').Select(f => int.Parse(f, NumberStyles.None, CultureInfo.InvariantCulture))];
            foreach (int fd in fds)
            {
                Posix.SetInheritable(fd, false);
            }
            if (fields[0] is "shared" or "activated")
            {
                _inheritedShared[original] = fds[0];
            }
            else
            {
                _inheritedSlots[original] = fds;
            }
        }
    }

    /// <summary>The listening socket the replaced master had for this shared bind, or null.</summary>
    private Socket? TakeInheritedShared(BindAddress bind)
    {
        if (!_inheritedShared.Remove(bind.Original, out int fd))
        {
            return null;
        }
        Log.Info($"Listening at: {Listeners.Describe(bind, _options.Tls)}, inherited from the master this one replaces (pid {_upgradeParent})");
        return new Socket(new SafeSocketHandle(fd, ownsHandle: true));
    }

    /// <summary>
    /// Makes the replaced master's listening TCP sockets this master's slots, in their group order (slot i is
    /// the i-th to have joined), so that the port's group is exactly what it was and steering stays right.
    /// Sockets of binds this master no longer has are closed.
    /// </summary>
    private void AdoptInheritedSlots()
    {
        int slots = 0;
        for (int i = 0; i < _binds.Count; i++)
        {
            if (_binds[i] is BindAddress.Tcp && _inheritedSlots.TryGetValue(_binds[i].Original, out int[]? fds))
            {
                slots = Math.Max(slots, fds.Length);
            }
        }
        for (int slot = 0; slot < slots; slot++)
        {
            var sockets = new Socket?[_binds.Count];
            for (int i = 0; i < _binds.Count; i++)
            {
                if (_binds[i] is BindAddress.Tcp tcp)
                {
                    sockets[i] = _inheritedSlots.TryGetValue(tcp.Original, out int[]? fds) && slot < fds.Length
                        ? Listening(new Socket(new SafeSocketHandle(fds[slot], ownsHandle: true)))
                        // A bind the replaced master did not have: listening now, as the slot is already in the
                        // other binds' groups (its connections wait in the backlog for the first worker).
                        : Listeners.BindOne(tcp, _options.Backlog, reusePort: true, listen: true);
                }
            }
            _slotSockets[slot] = sockets;
            _steering.Joined(slot);
        }
        foreach ((string original, int[] fds) in _inheritedSlots)
        {
            if (!_binds.Any(b => b.Original == original))
            {
                foreach (int fd in fds) Posix.Close(fd);
            }
        }
        foreach ((_, int fd) in _inheritedShared)
        {
            Posix.Close(fd);
        }
        _inheritedSlots.Clear();
        _inheritedShared.Clear();
        if (slots > 0)
        {
            Log.Info($"Took over {slots} listening socket{(slots == 1 ? "" : "s")} per TCP bind from the master this one replaces (pid {_upgradeParent})");
        }
    }

    /// <summary>An inherited socket listening: already so, or one whose worker in the replaced master was still booting.</summary>
    private Socket Listening(Socket socket)
    {
        socket.Listen(_options.Backlog);
        return socket;
    }

    private bool UpgradeParentAlive => _upgradeParent != 0;

    private bool UpgradeChildAlive => _upgradeChild is { HasExited: false };

    /// <summary>Once a tick: when the replaced master is gone, this one is the master (and takes the pid file).</summary>
    private void CheckPromotion()
    {
        if (_upgradeParent == 0 || Posix.ParentProcessId == _upgradeParent)
        {
            return;
        }
        Log.Info($"Master has been promoted: the master it replaced (pid {_upgradeParent}) is gone");
        _upgradeParent = 0;
        SystemdNotify.Send($"MAINPID={Environment.ProcessId}\nSTATUS=osprey master [{_name}] serving, promoted after USR2");
        if (_options.PidFile is { } pidFile)
        {
            if (WritePidFile(pidFile) is string error)
            {
                Log.Error(error);
                return;
            }
            if (_pidFileWritten is { } previous && previous != pidFile)
            {
                TryDelete(previous);
            }
            _pidFileWritten = pidFile;
        }
    }

    /// <summary>USR2: starts a new master that inherits every listening socket.</summary>
    private void StartUpgrade()
    {
        if (UpgradeChildAlive)
        {
            Log.Warning($"USR2 ignored: the new master (pid {_upgradeChild!.Id}) is still running");
            return;
        }
        if (UpgradeParentAlive)
        {
            Log.Warning($"USR2 ignored: the master this one replaces (pid {_upgradeParent}) is still running");
            return;
        }
        var listeners = new StringBuilder();
        var fds = new List<int>();
        for (int i = 0; i < _binds.Count; i++)
        {
            string original = Convert.ToBase64String(Encoding.UTF8.GetBytes(_binds[i].Original));
            if (_shared[i] is { } shared)
            {
                int fd = (int)shared.Handle;
                fds.Add(fd);
                listeners.Append(CultureInfo.InvariantCulture, $"{(_socketActivated ? "activated" : "shared")}\t{original}\t{fd}\n");
                continue;
            }
            // Those in the port's group first, in its order; then those whose worker is still booting (not listening
            // yet), which the new master makes listen at once, in this order: so it knows the group's order, and it
            // holds every socket this master may close, whose queued connections would otherwise be reset.
            var slotFds = new List<int>();
            foreach (int slot in _steering.GroupOrder.Concat(_slotSockets.Keys.Where(s => !_steering.IsListening(s)).Order()))
            {
                if (_slotSockets.TryGetValue(slot, out Socket?[]? sockets) && sockets[i] is { } socket)
                {
                    slotFds.Add((int)socket.Handle);
                }
            }
            if (slotFds.Count > 0)
            {
                fds.AddRange(slotFds);
                listeners.Append(CultureInfo.InvariantCulture, $"slots\t{original}\t{string.Join(',', slotFds)}\n");
            }
        }

        ProcessStartInfo start = StartInfoOfThisExecutable(_argv);
        // The environment this master started with, not the one -e made of it.
        foreach ((string name, string? value) in _environmentBefore)
        {
            if (value is null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        start.Environment[UpgradeFromVariable] = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        if (SystemdNotify.Socket is { } notifySocket)
        {
            start.Environment["NOTIFY_SOCKET"] = notifySocket;
        }
        start.Environment[UpgradeListenersVariable] = listeners.ToString();

        // gunicorn calls it in the new master's process just before exec; here the hook process calls it as
        // the new master starts (which does not wait for it).
        _hooks?.Call("pre_exec", _targetWorkers);
        Process child;
        foreach (int fd in fds) Posix.SetInheritable(fd, true);
        try
        {
            child = Process.Start(start) ?? throw new IOException("the new master did not start");
        }
        catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception)
        {
            Log.Error($"USR2: cannot start a new master: {e.Message}");
            return;
        }
        finally
        {
            foreach (int fd in fds) Posix.SetInheritable(fd, false);
        }
        _upgradeChild = child;
        child.EnableRaisingEvents = true;
        child.Exited += (_, _) => _events.Add(() => UpgradeChildExited(child));
        if (child.HasExited)
        {
            _events.Add(() => UpgradeChildExited(child));
        }
        Log.Info($"Started a new master (pid {child.Id}) sharing the listening sockets; once it serves, TERM this one (pid {Environment.ProcessId})");
    }

    private void UpgradeChildExited(Process child)
    {
        if (_upgradeChild != child)
        {
            return;
        }
        _upgradeChild = null;
        Log.Warning($"The new master (pid {child.Id}) exited with code {child.ExitCode}; this master goes on serving");
        child.Dispose();
    }

    /// <summary>WINCH: a --daemon master stops its workers gracefully and stays (HUP restarts them); otherwise a terminal resized.</summary>
    private void StopWorkersKeepingMaster()
    {
        if (!_options.Daemon)
        {
            Log.Debug("WINCH ignored: not daemonized");
            return;
        }
        int previous = _targetWorkers;
        SetTargetWorkers(0);
        Log.Info("Stopping all workers gracefully; the master stays (HUP starts them again)");
        _hooks?.Call("nworkers_changed", 0, newWorkers: 0, oldWorkers: previous);
    }
}
