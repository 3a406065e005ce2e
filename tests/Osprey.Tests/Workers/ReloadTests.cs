using System.Net.Http;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// --reload: a changed module (or --reload-extra-file) gets the workers replaced, under load, without
/// a failed request; code that no longer imports leaves the old workers serving until it is fixed.
/// </summary>
public sealed class ReloadTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly string _dir = Directory.CreateTempSubdirectory("osprey-reload-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void Write(string name, string text) => File.WriteAllText(Path.Combine(_dir, name), text);

    private static async Task<string> VersionAsync(HttpClient client, int port) =>
        await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}/version"));

    /// <summary>Waits until none of <paramref name="old"/> is a worker any more; returns the workers then.</summary>
    private static async Task<List<int>> WaitForReplacementAsync(OspreyServer server, List<int> old)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (true)
        {
            var now = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
            if (!now.Intersect(old).Any())
            {
                return now;
            }
            Assert.True(DateTime.UtcNow < deadline, $"workers {string.Join(", ", old)} were not replaced:\n{server.ErrorLog}");
            await Task.Delay(100);
        }
    }

    private static async Task WaitForVersionAsync(HttpClient client, int port, string expected)
    {
        var deadline = DateTime.UtcNow + Eventually;
        string seen;
        while ((seen = await VersionAsync(client, port)) != expected)
        {
            Assert.True(DateTime.UtcNow < deadline, $"still '{seen}', not '{expected}'");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task Changed_code_is_served_by_replacements_and_broken_code_leaves_the_old_workers()
    {
        Write("reload_app.py", """
            import os
            import helper

            def app(environ, start_response):
                body = (str(os.getpid()) if environ['PATH_INFO'] == '/pid' else helper.VERSION).encode()
                start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
                return [body]
            """);
        Write("helper.py", "VERSION = 'one'\n");
        Write("page.txt", "template 1\n");
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "reload_app:app", Chdir = _dir,
            Args = ["-w", "2", "--reload", "--reload-extra-file", Path.Combine(_dir, "page.txt"), "--log-level", "debug"],
        });
        var deadline = DateTime.UtcNow + Eventually;
        while (server.ErrorLog.Split("--reload: watching").Length < 3)
        {
            Assert.True(DateTime.UtcNow < deadline, "the workers did not start watching:\n" + server.ErrorLog);
            await Task.Delay(50);
        }
        using var client = NewClient();
        await using var load = new LoadLoop(server.Port, concurrency: 2);
        var initial = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        Assert.Equal("one", await VersionAsync(client, server.Port));

        Write("helper.py", "VERSION = 'two'\n");
        await WaitForReplacementAsync(server, initial);
        await WaitForVersionAsync(client, server.Port, "two");

        var mark = server.ErrorLogPosition;
        Write("helper.py", "VERSION = (\n");
        await server.WaitForLogAsync("the old workers keep serving", Eventually, mark);
        var serving = await WaitForChildrenAsync(server.ProcessId, 2, Eventually);
        Assert.Equal("two", await VersionAsync(client, server.Port));

        Write("helper.py", "VERSION = 'three'\n");
        var afterFix = await WaitForReplacementAsync(server, serving);
        await WaitForVersionAsync(client, server.Port, "three");

        Write("page.txt", "template 2\n");
        await WaitForReplacementAsync(server, afterFix);
        await load.WaitForOkAsync(load.Ok + 20, Eventually);
        await load.StopAsync();

        Assert.Equal(0, load.Failed);
        Assert.Contains("SyntaxError", server.ErrorLog, StringComparison.Ordinal);
    }
}
