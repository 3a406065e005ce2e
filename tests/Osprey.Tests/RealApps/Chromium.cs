using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>
/// Headless Chromium (Debian's chromium package) driven over the DevTools protocol: one browser process with a fresh
/// profile, one page. Only what the tests need: navigate, evaluate JavaScript, wait for a condition, screenshot.
/// </summary>
public sealed class Chromium : IAsyncDisposable
{
    public const string Executable = "/usr/bin/chromium";

    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);

    private readonly Process _process;
    private readonly TempDir _profile;
    private readonly LogBuffer _stderr;
    private readonly ClientWebSocket _socket = new();
    private readonly ConcurrentDictionary<int, TaskCompletionSource<JsonElement>> _pending = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private Task _receiveLoop = Task.CompletedTask;
    private int _nextId;
    private string? _session;

    private Chromium(Process process, TempDir profile, LogBuffer stderr)
    {
        _process = process;
        _profile = profile;
        _stderr = stderr;
    }

    public string BrowserLog => _stderr.Text;

    /// <summary>Starts Chromium and opens one blank page; fails with a clear message when Chromium is missing.</summary>
    public static async Task<Chromium> LaunchAsync()
    {
        if (!File.Exists(Executable))
        {
            throw new InvalidOperationException(
                $"{Executable} not found: the real-browser test needs Debian's chromium package; scripts/setup.sh installs it (apt-get install chromium).");
        }
        var profile = TempDir.Create("osprey-chromium-");
        var psi = new ProcessStartInfo(Executable)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var arg in (string[])["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--no-default-browser-check", "--mute-audio", "--window-size=1280,900",
                     $"--user-data-dir={profile.Path}", "--remote-debugging-port=0", "about:blank"])
        {
            psi.ArgumentList.Add(arg);
        }
        var stderr = new LogBuffer();
        var process = Process.Start(psi)!;
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                stderr.AppendLine(e.Data);
            }
        };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var browser = new Chromium(process, profile, stderr);
        try
        {
            await browser.ConnectAsync();
            return browser;
        }
        catch
        {
            await browser.DisposeAsync();
            throw;
        }
    }

    private async Task ConnectAsync()
    {
        // With --remote-debugging-port=0 Chromium picks a port and writes "PORT\n/devtools/browser/ID" into the profile.
        var portFile = Path.Combine(_profile.Path, "DevToolsActivePort");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        string[] lines;
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"chromium exited with {_process.ExitCode} before opening DevTools:\n{BrowserLog}");
            }
            if (File.Exists(portFile) && (lines = (await File.ReadAllTextAsync(portFile)).Split('\n', StringSplitOptions.RemoveEmptyEntries)).Length >= 2)
            {
                break;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"chromium wrote no DevToolsActivePort within 30 s:\n{BrowserLog}");
            }
            await Task.Delay(50);
        }
        await _socket.ConnectAsync(new Uri($"ws://127.0.0.1:{lines[0].Trim()}{lines[1].Trim()}"), _stop.Token);
        _receiveLoop = Task.Run(ReceiveLoopAsync);

        var target = await SendAsync("Target.createTarget", new JsonObject { ["url"] = "about:blank" }, browserLevel: true);
        var attached = await SendAsync("Target.attachToTarget",
            new JsonObject { ["targetId"] = target.GetProperty("targetId").GetString(), ["flatten"] = true }, browserLevel: true);
        _session = attached.GetProperty("sessionId").GetString();
        await SendAsync("Page.enable");
        await SendAsync("Runtime.enable");
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = new byte[1 << 16];
        var message = new MemoryStream();
        try
        {
            while (!_stop.IsCancellationRequested && _socket.State == WebSocketState.Open)
            {
                var result = await _socket.ReceiveAsync(buffer, _stop.Token);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }
                message.Write(buffer, 0, result.Count);
                if (!result.EndOfMessage)
                {
                    continue;
                }
                using (var doc = JsonDocument.Parse(message.ToArray()))
                {
                    var root = doc.RootElement;
                    if (root.TryGetProperty("id", out var id) && _pending.TryRemove(id.GetInt32(), out var waiter))
                    {
                        if (root.TryGetProperty("error", out var error))
                        {
                            waiter.TrySetException(new InvalidOperationException($"DevTools error: {error}"));
                        }
                        else
                        {
                            waiter.TrySetResult(root.GetProperty("result").Clone());
                        }
                    }
                }
                message.SetLength(0);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or WebSocketException)
        {
        }
        foreach (var waiter in _pending.Values)
        {
            waiter.TrySetException(new InvalidOperationException($"the DevTools connection closed. Browser log:\n{BrowserLog}"));
        }
    }

    /// <summary>Sends one command (to the page's session unless <paramref name="browserLevel"/>) and returns its result.</summary>
    public async Task<JsonElement> SendAsync(string method, JsonObject? parameters = null, bool browserLevel = false)
    {
        var id = Interlocked.Increment(ref _nextId);
        var command = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
        if (!browserLevel)
        {
            command["sessionId"] = _session;
        }
        var waiter = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = waiter;
        await _sendLock.WaitAsync();
        try
        {
            await _socket.SendAsync(Encoding.UTF8.GetBytes(command.ToJsonString()), WebSocketMessageType.Text, true, _stop.Token);
        }
        finally
        {
            _sendLock.Release();
        }
        try
        {
            return await waiter.Task.WaitAsync(CommandTimeout);
        }
        catch (TimeoutException)
        {
            _pending.TryRemove(id, out _);
            throw new TimeoutException($"DevTools command {method} got no answer within {CommandTimeout.TotalSeconds} s");
        }
    }

    /// <summary>Evaluates <paramref name="expression"/> in the page and returns its value (JSON-serialisable values only).</summary>
    public async Task<JsonElement> EvaluateAsync(string expression)
    {
        var result = await SendAsync("Runtime.evaluate", new JsonObject
        {
            ["expression"] = expression,
            ["returnByValue"] = true,
            ["awaitPromise"] = true,
        });
        if (result.TryGetProperty("exceptionDetails", out var exception))
        {
            throw new InvalidOperationException($"JavaScript failed: {expression}\n{exception}");
        }
        return result.GetProperty("result").TryGetProperty("value", out var value) ? value.Clone() : default;
    }

    public async Task<string> EvaluateStringAsync(string expression) =>
        (await EvaluateAsync(expression)).GetString() ?? "";

    /// <summary>Polls <paramref name="condition"/> (JavaScript) until it is true; navigations in between are fine.</summary>
    public async Task WaitForAsync(string condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last = "";
        while (true)
        {
            try
            {
                var value = await EvaluateAsync(condition);
                if (value.ValueKind == JsonValueKind.True)
                {
                    return;
                }
                last = value.ToString();
            }
            catch (InvalidOperationException e)
            {
                // "Execution context was destroyed" while a navigation replaces the document: try again.
                last = e.Message;
            }
            if (DateTime.UtcNow > deadline)
            {
                var url = await EvaluateStringAsync("location.href");
                throw new TimeoutException($"'{condition}' still not true after {timeout.TotalSeconds} s (last: {last}) at {url}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>Navigates and waits until the document at a URL starting with <paramref name="expectedUrl"/> has loaded.</summary>
    public async Task NavigateAsync(string url, string? expectedUrl = null)
    {
        var result = await SendAsync("Page.navigate", new JsonObject { ["url"] = url });
        if (result.TryGetProperty("errorText", out var error))
        {
            throw new InvalidOperationException($"navigation to {url} failed: {error}");
        }
        await WaitForLoadedAsync(expectedUrl ?? url);
    }

    public Task WaitForLoadedAsync(string urlPrefix) =>
        WaitForAsync($"location.href.startsWith({JsonSerializer.Serialize(urlPrefix)}) && document.readyState === 'complete'",
            TimeSpan.FromSeconds(20));

    public async Task<byte[]> ScreenshotAsync()
    {
        var result = await SendAsync("Page.captureScreenshot", new JsonObject { ["format"] = "png" });
        return Convert.FromBase64String(result.GetProperty("data").GetString()!);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_socket.State == WebSocketState.Open)
            {
                await SendAsync("Browser.close", browserLevel: true).WaitAsync(TimeSpan.FromSeconds(3));
            }
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or WebSocketException)
        {
        }
        await _stop.CancelAsync();
        try
        {
            await _receiveLoop.WaitAsync(TimeSpan.FromSeconds(3));
        }
        catch (TimeoutException)
        {
        }
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
        _socket.Dispose();
        _stop.Dispose();
        _sendLock.Dispose();
        _profile.Dispose();
    }
}
