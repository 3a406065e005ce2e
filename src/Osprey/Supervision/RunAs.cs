using System.Globalization;
using System.Runtime.InteropServices;

namespace Osprey.Supervision;

/// <summary>
/// The user and group the workers run as (<c>--user</c>, <c>--group</c>). The master keeps its own
/// identity, as gunicorn's arbiter does: it binds the sockets and starts the workers; each worker
/// opens the log files and reads the certificate, then switches before Python starts, so no
/// application code ever runs with the master's privileges.
/// </summary>
/// <param name="SupplementaryOf">
/// --initgroups: the user name whose supplementary groups the workers take too; null for <see cref="GroupId"/> alone.
/// </param>
internal sealed record RunAs(uint UserId, uint GroupId, string? SupplementaryOf = null)
{
    /// <summary>
    /// Resolves the options: a name from the user or group database, or a number as it is.
    /// <c>--user</c> alone takes the user's primary group (gunicorn would keep the master's, root's
    /// group); <c>--group</c> alone keeps the user. Null when neither is given or there is nothing
    /// to change; on a problem, null and one line in <paramref name="error"/>. With
    /// <paramref name="initgroups"/> the user's supplementary groups are taken too, as gunicorn's --initgroups does.
    /// </summary>
    public static RunAs? Resolve(string? user, string? group, bool initgroups, out string? error)
    {
        error = null;
        if (user is null && group is null)
        {
            return null;
        }
        uint userId = Posix.EffectiveUserId;
        uint? primaryGroup = null;
        if (user is not null)
        {
            if (IsNumber(user, out uint id))
            {
                userId = id;
                primaryGroup = Posix.TryGetPrimaryGroup(id, out uint primary) ? primary : null;
            }
            else if (Posix.TryGetUser(user, out userId, out uint primary))
            {
                primaryGroup = primary;
            }
            else
            {
                error = $"--user: no such user '{user}'";
                return null;
            }
        }
        uint groupId;
        if (group is not null)
        {
            if (IsNumber(group, out uint id))
            {
                groupId = id;
            }
            else if (!Posix.TryGetGroup(group, out groupId))
            {
                error = $"--group: no such group '{group}'";
                return null;
            }
        }
        else if (user is null)
        {
            groupId = Posix.EffectiveGroupId;
        }
        else if (primaryGroup is uint primary)
        {
            groupId = primary;
        }
        else
        {
            error = $"--user {user}: no such user in the user database, so no primary group to take; give --group too";
            return null;
        }

        uint currentUser = Posix.EffectiveUserId;
        if (currentUser != 0)
        {
            // Naming the identity one already has is a no-op (setgroups alone would need root).
            if (userId != currentUser || groupId != Posix.EffectiveGroupId)
            {
                error = $"--user/--group: running workers as uid {userId} gid {groupId} needs root (osprey runs as uid {currentUser})";
            }
            return null;
        }
        string? supplementaryOf = null;
        if (initgroups && user is not null)
        {
            supplementaryOf = Posix.UserName(userId);
            if (supplementaryOf is null)
            {
                error = $"--initgroups: uid {userId} is not in the user database, so it has no supplementary groups to take";
                return null;
            }
        }
        return new RunAs(userId, groupId, supplementaryOf);
    }

    private static bool IsNumber(string text, out uint value) =>
        uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);

    /// <summary>Switches this process for good; null, or one line saying why it could not.</summary>
    public string? Switch()
    {
        int errno = Posix.SwitchIdentity(UserId, GroupId, SupplementaryOf);
        return errno == 0 ? null : $"cannot switch to uid {UserId} gid {GroupId}: {Marshal.GetPInvokeErrorMessage(errno)}";
    }

    /// <summary>
    /// Gives a unix socket the master bound to the workers' user and group, as gunicorn does: with
    /// a --umask that leaves the socket to its owner and group, a proxy in that group can connect.
    /// </summary>
    public string? Own(string path)
    {
        int errno = Posix.Chown(path, UserId, GroupId);
        return errno == 0 ? null : $"cannot give {path} to uid {UserId} gid {GroupId}: {Marshal.GetPInvokeErrorMessage(errno)}";
    }
}
