using System.Diagnostics;
using System.Net.Sockets;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// What is already at a <c>-b unix:PATH</c>: a socket file left by a server that died is replaced (a
/// restart after kill -9 must work), a socket someone listens on is an error, and so is a file that is
/// not a socket (gunicorn refuses to remove one too).
/// </summary>
public sealed class UnixSocketPathTests : IDisposable
{
    private readonly TempDir _dir = TempDir.Create("osprey-unixpath-");

    public void Dispose() => _dir.Dispose();

    /// <summary>A socket file nobody listens on, as a killed server leaves it (Python never unlinks on close; .NET would).</summary>
    private static void MakeStaleSocketFile(string path)
    {
        var start = new ProcessStartInfo(RepoPaths.SystemPython) { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); s.close()");
        start.ArgumentList.Add(path);
        using Process process = Process.Start(start)!;
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
        Assert.True(File.Exists(path));
    }

    private static Task<ProcessResult> RunAsync(string socketPath) =>
        OspreyServer.RunToCompletionAsync(
            OspreyServer.BuildArguments(new OspreyServerOptions { App = "workers_app:app", Args = ["-b", $"unix:{socketPath}"] }, OspreyServer.GetFreePort()),
            TimeSpan.FromSeconds(60));

    [Fact]
    public async Task A_stale_socket_file_left_by_a_dead_server_is_replaced()
    {
        string path = Path.Combine(_dir.Path, "stale.sock");
        MakeStaleSocketFile(path);

        await using var server = await StartAsync("osprey", "-b", $"unix:{path}");

        string response = await UnixGetAsync(path, "/pid");
        Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        Signal(server.ProcessId, SIGTERM);
        await WaitForExitAsync(server, TimeSpan.FromSeconds(30));
        Assert.False(File.Exists(path), "the socket file outlived the master");
    }

    [Fact]
    public async Task A_socket_someone_listens_on_is_an_error_and_is_left_alone()
    {
        string path = Path.Combine(_dir.Path, "live.sock");
        using var live = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        live.Bind(new UnixDomainSocketEndPoint(path));
        live.Listen(1);

        ProcessResult result = await RunAsync(path);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains($"Connection in use: unix:{path} (another server is listening there)", result.Stderr, StringComparison.Ordinal);
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(path));
    }

    [Fact]
    public async Task A_file_that_is_not_a_socket_is_an_error_and_is_left_alone()
    {
        string path = _dir.Write("notes.sock", "not a socket");

        ProcessResult result = await RunAsync(path);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains($"cannot bind unix:{path}: {path} exists and is not a socket", result.Stderr, StringComparison.Ordinal);
        Assert.Equal("not a socket", File.ReadAllText(path));
    }

    [Fact]
    public async Task A_missing_directory_is_named()
    {
        string path = Path.Combine(_dir.Path, "nowhere", "x.sock");

        ProcessResult result = await RunAsync(path);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains($"cannot bind unix:{path}: directory {Path.Combine(_dir.Path, "nowhere")} does not exist", result.Stderr, StringComparison.Ordinal);
    }
}
