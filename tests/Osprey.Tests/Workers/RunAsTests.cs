using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Osprey.Tests.Workers;

/// <summary>
/// --user and --group: the workers switch before Python starts, the master keeps its identity.
/// These tests need root, as the feature does (CI runs as root); they switch to Debian's
/// unprivileged "nobody" (and "nogroup", "users").
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RunAsTests : IDisposable
{
    private readonly ITestOutputHelper _output;

    // The application is copied to a directory "nobody" can read: the checkout may be under /root.
    private readonly string _apps;

    public RunAsTests(ITestOutputHelper output)
    {
        _output = output;
        Assert.True(Environment.UserName == "root", "the --user tests need root (the feature does)");
        _apps = Directory.CreateTempSubdirectory("osprey-runas-").FullName;
        File.SetUnixFileMode(_apps, (UnixFileMode)0x1ED); // 0755
        File.Copy(Path.Combine(RepoPaths.Apps, "identity_app.py"), Path.Combine(_apps, "identity_app.py"));
    }

    public void Dispose() => Directory.Delete(_apps, recursive: true);

    private static (uint Uid, uint Gid) PasswdEntry(string user)
    {
        string line = File.ReadAllLines("/etc/passwd").Single(l => l.StartsWith(user + ":", StringComparison.Ordinal));
        string[] fields = line.Split(':');
        return (uint.Parse(fields[2], CultureInfo.InvariantCulture), uint.Parse(fields[3], CultureInfo.InvariantCulture));
    }

    private static uint GroupId(string group) =>
        uint.Parse(File.ReadAllLines("/etc/group").Single(l => l.StartsWith(group + ":", StringComparison.Ordinal)).Split(':')[2], CultureInfo.InvariantCulture);

    /// <summary>The real, effective, saved and filesystem user ids of a process (/proc/PID/status).</summary>
    private static string Uids(int pid) =>
        File.ReadAllLines($"/proc/{pid}/status").Single(l => l.StartsWith("Uid:", StringComparison.Ordinal))[4..].Trim();

    private Task<OspreyServer> StartAsync(string engine, params string[] args) =>
        OspreyServer.StartAsync(new OspreyServerOptions { App = "identity_app:app", Engine = engine, Chdir = _apps, Args = args });

    private static async Task<JsonElement> IdentityAsync(OspreyServer server, HttpClient? client = null, string scheme = "http")
    {
        using var own = client is null ? new HttpClient { Timeout = TimeSpan.FromSeconds(30) } : null;
        string text = await (client ?? own!).GetStringAsync(new Uri($"{scheme}://127.0.0.1:{server.Port}/"));
        return JsonDocument.Parse(text).RootElement;
    }

    private static uint[] Groups(JsonElement identity) => [.. identity.GetProperty("groups").EnumerateArray().Select(g => g.GetUInt32())];

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task User_alone_runs_the_application_as_that_user_and_its_primary_group_only(string engine)
    {
        var (uid, gid) = PasswdEntry("nobody");
        await using var server = await StartAsync(engine, "-u", "nobody", "-w", "2");
        JsonElement identity = await IdentityAsync(server);

        Assert.Equal(uid, identity.GetProperty("uid").GetUInt32());
        Assert.Equal(uid, identity.GetProperty("euid").GetUInt32());
        Assert.Equal(gid, identity.GetProperty("gid").GetUInt32());
        Assert.Equal(gid, identity.GetProperty("egid").GetUInt32());
        // root's supplementary groups are gone.
        Assert.Equal([gid], Groups(identity));

        // Every worker switched (real, effective, saved and filesystem ids); the master did not.
        List<int> workers = await ProcessTools.WaitForChildrenAsync(server.ProcessId, 2, TimeSpan.FromSeconds(30));
        foreach (int worker in workers)
        {
            // The other worker may still be booting; it switches before it reports ready.
            await server.WaitForLogAsync($"Booting worker with pid: {worker}", TimeSpan.FromSeconds(30));
            Assert.Equal($"{uid}\t{uid}\t{uid}\t{uid}", Uids(worker));
        }
        Assert.Equal("0\t0\t0\t0", Uids(server.ProcessId));
        Assert.Contains($"Workers run as uid {uid} gid {gid}", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task User_and_group_by_number_and_group_alone_are_applied()
    {
        var (uid, _) = PasswdEntry("nobody");
        uint users = GroupId("users");
        await using (var server = await StartAsync("osprey", "--user", uid.ToString(CultureInfo.InvariantCulture), $"--group={users}"))
        {
            JsonElement identity = await IdentityAsync(server);
            Assert.Equal(uid, identity.GetProperty("euid").GetUInt32());
            Assert.Equal(users, identity.GetProperty("egid").GetUInt32());
            Assert.Equal([users], Groups(identity));
        }
        await using (var server = await StartAsync("osprey", "-g", "users"))
        {
            JsonElement identity = await IdentityAsync(server);
            Assert.Equal(0u, identity.GetProperty("euid").GetUInt32());
            Assert.Equal(users, identity.GetProperty("egid").GetUInt32());
            Assert.Equal([users], Groups(identity));
        }
    }

    [Fact]
    public async Task A_replacement_worker_switches_too_and_the_master_still_stops_it()
    {
        var (uid, _) = PasswdEntry("nobody");
        int worker;
        await using (var server = await StartAsync("osprey", "-u", "nobody", "--max-requests", "3"))
        {
            int first = (await IdentityAsync(server)).GetProperty("pid").GetInt32();
            JsonElement later = default;
            // The old worker serves until its replacement is ready.
            Assert.True(await Integration.TestSupport.EventuallyAsync(async () =>
            {
                later = await IdentityAsync(server);
                return later.GetProperty("pid").GetInt32() != first;
            }, TimeSpan.FromSeconds(30)), "the worker was not replaced after --max-requests 3");
            Assert.Equal(uid, later.GetProperty("euid").GetUInt32());
            worker = later.GetProperty("pid").GetInt32();
        }
        // The master (root) could signal its unprivileged worker: nothing is left behind.
        Assert.True(await Integration.TestSupport.EventuallyAsync(() => Task.FromResult(!ProcessTools.IsAlive(worker)), TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Worker_whose_master_is_killed_dies_with_it_after_switching()
    {
        // Changing credentials clears the parent-death signal; the worker sets it again. A request
        // in flight keeps a worker that only noticed the lost master busy for --graceful-timeout.
        await using var server = await StartAsync("osprey", "-u", "nobody", "--threads", "2");
        int worker = (await IdentityAsync(server)).GetProperty("pid").GetInt32();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        Task<string> inFlight = client.GetStringAsync(new Uri($"http://127.0.0.1:{server.Port}/?sleep=60"));
        await Task.Delay(500);
        ProcessTools.Signal(server.ProcessId, ProcessTools.SIGKILL);
        Assert.True(await Integration.TestSupport.EventuallyAsync(() => Task.FromResult(!ProcessTools.IsAlive(worker)), TimeSpan.FromSeconds(10)),
            "the worker outlived its master");
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => inFlight);
    }

    [Fact]
    public async Task Unix_socket_is_given_to_the_workers_user()
    {
        var (uid, gid) = PasswdEntry("nobody");
        string socket = Path.Combine(_apps, "osprey.sock");
        await using var server = await StartAsync("osprey", "-u", "nobody", "-b", "unix:" + socket);
        await IdentityAsync(server);
        Assert.Equal($"{uid} {gid}", await OwnerAsync(socket));
    }

    [Fact]
    public async Task Workers_reopen_log_files_the_master_recreated_after_logrotate()
    {
        var (uid, gid) = PasswdEntry("nobody");
        string accessLog = Path.Combine(_apps, "access.log");
        await using var server = await StartAsync("osprey", "-u", "nobody", "--access-logfile", accessLog);
        await IdentityAsync(server);
        File.Move(accessLog, accessLog + ".1");
        ProcessTools.Signal(server.ProcessId, 10 /* SIGUSR1 */);

        // The master creates the new file as root and gives it to nobody before it signals the worker.
        Assert.True(await Integration.TestSupport.EventuallyAsync(async () =>
        {
            await IdentityAsync(server);
            return File.Exists(accessLog) && (await File.ReadAllTextAsync(accessLog)).Contains("GET / HTTP/1.1", StringComparison.Ordinal);
        }, TimeSpan.FromSeconds(15)), $"no request reached the new access log:\n{server.ErrorLog}");
        Assert.Equal($"{uid} {gid}", await OwnerAsync(accessLog));
        Assert.DoesNotContain("cannot reopen", server.ErrorLog, StringComparison.Ordinal);
    }

    private static async Task<string> OwnerAsync(string path)
    {
        using var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %g", path]) { RedirectStandardOutput = true })!;
        string owner = await stat.StandardOutput.ReadToEndAsync();
        await stat.WaitForExitAsync();
        return owner.Trim();
    }

    [Fact]
    public async Task Key_file_only_root_can_read_is_loaded_before_the_switch()
    {
        string tls = Directory.CreateTempSubdirectory("osprey-runas-tls-").FullName; // 0700, root's
        try
        {
            var (cert, keyFile) = Integration.TlsTests.WriteSelfSigned(tls, "CN=osprey-runas");
            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            await using var server = await StartAsync("kestrel", "-u", "nobody", "--certfile", cert, "--keyfile", keyFile);
            using var client = new HttpClient(new SocketsHttpHandler
            {
                SslOptions = new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
            }) { Timeout = TimeSpan.FromSeconds(30) };
            JsonElement identity = await IdentityAsync(server, client, "https");
            Assert.Equal(PasswdEntry("nobody").Uid, identity.GetProperty("euid").GetUInt32());
        }
        finally
        {
            Directory.Delete(tls, recursive: true);
        }
    }

    /// <summary>
    /// Starts a copy of the server as nobody (setpriv), from a directory nobody can read: the
    /// build may sit under /root. Returns the process; the caller kills it.
    /// </summary>
    private System.Diagnostics.Process StartAsNobody(int port, params string[] args)
    {
        string copy = Path.Combine(_apps, "bin");
        // Copied once: a second copy over the first could meet its workers still exiting ("text file busy").
        if (!Directory.Exists(copy))
        {
            Directory.CreateDirectory(copy);
            File.SetUnixFileMode(copy, (UnixFileMode)0x1ED);
            string built = Path.GetDirectoryName(RepoPaths.OspreyExecutable)!;
            foreach (string file in Directory.EnumerateFiles(built, Path.GetFileName(RepoPaths.OspreyExecutable) + "*"))
            {
                File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
            }
        }
        var start = new System.Diagnostics.ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in (string[])["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
            Path.Combine(copy, Path.GetFileName(RepoPaths.OspreyExecutable)),
            "-b", $"127.0.0.1:{port}", "--python", RepoPaths.SystemPython, "--chdir", _apps, .. args, "identity_app:app"])
        {
            start.ArgumentList.Add(arg);
        }
        start.Environment["HOME"] = _apps;
        start.Environment.Remove("VIRTUAL_ENV");
        return System.Diagnostics.Process.Start(start)!;
    }

    [Fact]
    public async Task Without_root_naming_the_current_user_is_a_no_op_and_another_is_one_line()
    {
        var (uid, gid) = PasswdEntry("nobody");
        int port = OspreyServer.GetFreePort();
        using (var server = StartAsNobody(port, "-u", "nobody", "-g", "nogroup"))
        {
            Task<string> errors = server.StandardError.ReadToEndAsync();
            try
            {
                using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
                JsonElement identity = default;
                bool served = await Integration.TestSupport.EventuallyAsync(async () =>
                {
                    try
                    {
                        identity = JsonDocument.Parse(await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}/"))).RootElement;
                        return true;
                    }
                    catch (HttpRequestException)
                    {
                        return !server.HasExited ? false : throw new Xunit.Sdk.XunitException($"exited {server.ExitCode}: {await errors}");
                    }
                }, TimeSpan.FromSeconds(30));
                Assert.True(served, "the server run as nobody did not answer");
                Assert.Equal(uid, identity.GetProperty("euid").GetUInt32());
                Assert.Equal(gid, identity.GetProperty("egid").GetUInt32());
            }
            finally
            {
                server.Kill(entireProcessTree: true);
                await server.WaitForExitAsync();
            }
        }

        using var refused = StartAsNobody(OspreyServer.GetFreePort(), "--user", "root");
        string stderr = await refused.StandardError.ReadToEndAsync();
        await refused.WaitForExitAsync();
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains($"--user/--group: running workers as uid 0 gid 0 needs root (osprey runs as uid {uid})", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--user", "no-such-user-here", "--user: no such user 'no-such-user-here'")]
    [InlineData("--group", "no-such-group-here", "--group: no such group 'no-such-group-here'")]
    [InlineData("--user", "4242", "--user 4242: no such user in the user database, so no primary group to take; give --group too")]
    public async Task Unknown_user_or_group_is_one_line_and_exit_1(string option, string value, string message)
    {
        var args = OspreyServer.BuildArguments(new OspreyServerOptions { App = "identity_app:app", Chdir = _apps, Args = [option, value] }, OspreyServer.GetFreePort());
        ProcessResult result = await OspreyServer.RunToCompletionAsync(args, TimeSpan.FromSeconds(30));
        _output.WriteLine(result.ToString());
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// --initgroups: the workers take the user's supplementary groups from the group database, as
    /// gunicorn's do; without it, the primary group alone. A group made for the test holds "nobody".
    /// </summary>
    [Fact]
    public async Task Initgroups_gives_the_workers_the_users_supplementary_groups()
    {
        const string Group = "osprey-initgroups-test";
        var (_, gid) = PasswdEntry("nobody");
        Command("groupdel", Group);
        Assert.Equal(0, Command("groupadd", Group));
        try
        {
            Assert.Equal(0, Command("gpasswd", "-a", "nobody", Group));
            uint supplementary = GroupId(Group);

            await using (var server = await StartAsync("osprey", "-u", "nobody", "--initgroups"))
            {
                Assert.Equal(new[] { gid, supplementary }.Order(), Groups(await IdentityAsync(server)).Order());
                Assert.Contains("with the supplementary groups of nobody", server.ErrorLog, StringComparison.Ordinal);
            }
            await using (var server = await StartAsync("osprey", "-u", "nobody"))
            {
                Assert.Equal([gid], Groups(await IdentityAsync(server)));
            }
        }
        finally
        {
            Command("groupdel", Group);
        }
    }

    private static int Command(string file, params string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = System.Diagnostics.Process.Start(start)!;
        process.WaitForExit();
        return process.ExitCode;
    }
}
