using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// HUP reads the configuration file again, as gunicorn's does: the next generation of workers runs
/// with what the file says now. A file that fails, or a change only a restart can make, cancels the
/// reload and leaves the serving workers alone.
/// </summary>
public sealed class ConfigReloadTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-config-reload-");

    public void Dispose() => _dir.Dispose();

    /// <summary>Polls until a response shows <paramref name="rawEnv"/> from every worker in turn (the old ones are gone).</summary>
    private static async Task<JsonElement> WaitForRawEnvAsync(OspreyServer server, string? rawEnv, int workers)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (true)
        {
            var children = Children(server.ProcessId);
            if (children.Count == workers)
            {
                var seen = await RawHttp.GetJsonAsync(server);
                if (seen.GetProperty("raw_env").GetString() == rawEnv && children.Contains(seen.GetProperty("pid").GetInt32()))
                {
                    var again = Children(server.ProcessId);
                    if (again.Count == workers && again.Order().SequenceEqual(children.Order()))
                    {
                        return seen;
                    }
                }
            }
            Assert.True(DateTime.UtcNow < deadline, $"raw_env never became {rawEnv ?? "unset"} with {workers} workers. Error log:\n{server.ErrorLog}");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task HUP_applies_the_file_as_it_is_now()
    {
        var config = _dir.Write("app.conf.py", """
            wsgi_app = "config_app:app"
            workers = 1
            raw_env = ["OSPREY_CONFIG_TEST=first"]
            """);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "", Args = ["-c", config] });
        var first = await RawHttp.GetJsonAsync(server);
        Assert.Equal("first", first.GetProperty("raw_env").GetString());
        Assert.False(first.GetProperty("multiprocess").GetBoolean());

        _dir.Write("app.conf.py", """
            wsgi_app = "config_app:app"
            workers = 2
            raw_env = ["OSPREY_CONFIG_TEST=second"]
            """);
        var mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGHUP);
        var log = await server.WaitForLogAsync("Hang up: Master (starting generation 2)", Eventually, mark);
        Assert.Contains($"Configuration read from {config}", log, StringComparison.Ordinal);
        Assert.Contains("Using worker processes: 2", log, StringComparison.Ordinal);

        var second = await WaitForRawEnvAsync(server, "second", workers: 2);
        Assert.True(second.GetProperty("multiprocess").GetBoolean());
        Assert.DoesNotContain(first.GetProperty("pid").GetInt32(), Children(server.ProcessId));

        // A variable the file no longer sets is gone, not inherited from the master's previous
        // settings; and the logs go where the file now says, the master's and the workers'.
        var newErrorLog = Path.Combine(_dir.Path, "after-reload.log");
        _dir.Write("app.conf.py", $"""
            wsgi_app = "config_app:app"
            workers = 1
            errorlog = "{newErrorLog}"
            """);
        Signal(server.ProcessId, SIGHUP);
        var third = await WaitForRawEnvAsync(server, null, workers: 1);
        Assert.False(third.GetProperty("multiprocess").GetBoolean());
        Assert.False(third.GetProperty("config_arguments_leaked").GetBoolean());
        var newLog = File.ReadAllText(newErrorLog);
        Assert.Contains("Hang up: Master (starting generation 3)", newLog, StringComparison.Ordinal);
        Assert.Contains($"Booting worker with pid: {third.GetProperty("pid").GetInt32()}", newLog, StringComparison.Ordinal);
        Assert.DoesNotContain("generation 3", server.ErrorLog, StringComparison.Ordinal);
        Assert.False(server.HasExited);
    }

    [Theory]
    [InlineData("workers = int('four')\n", "ValueError: invalid literal for int()")]
    [InlineData("workers = 'many'\n", "--workers: 'many' is not a positive integer")]
    [InlineData("user = 'nobody'\n", "user or group changed; the workers' identity changes only with a restart")]
    public async Task A_reload_the_file_cannot_carry_is_cancelled_and_the_workers_keep_serving(string change, string words)
    {
        const string Base = """
            wsgi_app = "config_app:app"
            raw_env = ["OSPREY_CONFIG_TEST=kept"]

            """;
        var config = _dir.Write("app.conf.py", Base);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "", Args = ["-c", config] });
        var before = await RawHttp.GetJsonAsync(server);
        var workers = Children(server.ProcessId);

        _dir.Write("app.conf.py", Base + change);
        var mark = server.ErrorLogPosition;
        Signal(server.ProcessId, SIGHUP);
        var log = await server.WaitForLogAsync("Reload cancelled, the workers and settings stay as they were", Eventually, mark);

        Assert.Contains(words, log, StringComparison.Ordinal);
        Assert.DoesNotContain("Hang up: Master", log, StringComparison.Ordinal);
        var after = await RawHttp.GetJsonAsync(server);
        Assert.Equal(before.GetProperty("pid").GetInt32(), after.GetProperty("pid").GetInt32());
        Assert.Equal("kept", after.GetProperty("raw_env").GetString());
        Assert.Equal(workers, Children(server.ProcessId));

        // Fixed, the next HUP goes through, and its workers see the settings of the last good reading.
        _dir.Write("app.conf.py", Base.Replace("kept", "fixed", StringComparison.Ordinal));
        Signal(server.ProcessId, SIGHUP);
        await server.WaitForLogAsync("Hang up: Master (starting generation 2)", Eventually, mark);
        await WaitForRawEnvAsync(server, "fixed", workers: 1);
    }
}
