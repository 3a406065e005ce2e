namespace Osprey.Tests.Infrastructure;

/// <summary>
/// Class fixture: servers shared by the tests of one class (xunit runs those one at a time), keyed by
/// engine, app and arguments, started on first use, restarted if one has died, all stopped at the end.
/// Tests that look at the error log take <see cref="OspreyServer.ErrorLogPosition"/> first.
/// </summary>
public sealed class ServerPool : IAsyncLifetime
{
    private readonly Dictionary<string, OspreyServer> _servers = [];
    private readonly SemaphoreSlim _gate = new(1, 1);

    public async Task<OspreyServer> GetAsync(string engine, string app, params string[] args)
    {
        var key = engine + "\n" + app + "\n" + string.Join("\n", args);
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_servers.TryGetValue(key, out var existing))
            {
                if (!existing.HasExited)
                {
                    return existing;
                }
                await existing.DisposeAsync().ConfigureAwait(false);
                _servers.Remove(key);
            }
            var server = await OspreyServer.StartAsync(engine, app, args).ConfigureAwait(false);
            _servers[key] = server;
            return server;
        }
        finally
        {
            _gate.Release();
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    /// <summary>
    /// Stops the servers; then fails the class (as a cleanup failure) if any of them wrote a .NET stack trace
    /// to its error log, which a user must never see whatever the app did.
    /// </summary>
    public async Task DisposeAsync()
    {
        var leaks = new List<string>();
        foreach (var server in _servers.Values)
        {
            await server.DisposeAsync().ConfigureAwait(false);
            if (server.ErrorLog.Contains("   at Osprey.", StringComparison.Ordinal)
                || server.ErrorLog.Contains("Unhandled exception", StringComparison.Ordinal))
            {
                leaks.Add($"{server.CommandLine}\n{server.ErrorLog}");
            }
        }
        _servers.Clear();
        _gate.Dispose();
        if (leaks.Count > 0)
        {
            throw new InvalidOperationException("A server's error log shows a .NET stack trace:\n" + string.Join("\n\n", leaks));
        }
    }
}
