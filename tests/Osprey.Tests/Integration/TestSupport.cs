using System.Text.Json;
using System.Text.RegularExpressions;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Integration;

/// <summary>Small helpers shared by the integration tests.</summary>
internal static partial class TestSupport
{
    public static readonly TimeSpan LogTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The "environ" object environ_app answers with.</summary>
    public static JsonElement Environ(RawHttpResponse response)
    {
        Assert.True(response.StatusCode == 200, $"environ_app answered {response}");
        return response.Json().GetProperty("environ");
    }

    /// <summary>A str value of the environ; fails if absent or not a str.</summary>
    public static string Str(JsonElement environ, string key)
    {
        Assert.True(environ.TryGetProperty(key, out var value), $"environ has no '{key}'. Keys: {string.Join(", ", Keys(environ))}");
        Assert.True(value.ValueKind == JsonValueKind.String, $"environ['{key}'] is not a str: {value}");
        return value.GetString()!;
    }

    /// <summary>A non-str value of the environ as described by environ_app: {type, repr, callable, methods}.</summary>
    public static JsonElement Obj(JsonElement environ, string key)
    {
        Assert.True(environ.TryGetProperty(key, out var value), $"environ has no '{key}'. Keys: {string.Join(", ", Keys(environ))}");
        Assert.True(value.ValueKind == JsonValueKind.Object, $"environ['{key}'] is a str ('{value}'), expected a non-str object");
        return value;
    }

    public static IEnumerable<string> Keys(JsonElement environ) => environ.EnumerateObject().Select(p => p.Name);

    public static List<string> Strings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    /// <summary>Error-log lines of the gunicorn form "[date] [pid] [LEVEL] message" with the given level.</summary>
    public static List<string> LogLines(string log, string level) =>
        [.. log.Split('\n').Where(line => LogLineRegex().Match(line) is { Success: true } m && m.Groups["level"].Value == level)];

    /// <summary>The server must never show .NET internals to the user.</summary>
    public static void AssertNoDotNetStackTrace(string text)
    {
        Assert.DoesNotContain("Unhandled exception", text, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", text, StringComparison.Ordinal);
    }

    /// <summary>After an error, the same server still answers an ordinary request.</summary>
    public static async Task AssertStillServesAsync(OspreyServer server, string target = "/list1", string expectedBody = "hello")
    {
        var response = await RawHttp.GetAsync(server, target);
        Assert.Equal(200, response.StatusCode);
        Assert.Equal(expectedBody, response.BodyText);
    }

    /// <summary>Fails if <paramref name="substring"/> shows up in the error log (after <paramref name="from"/>) within <paramref name="window"/>.</summary>
    public static async Task AssertNoLogWithinAsync(OspreyServer server, string substring, TimeSpan window, int from)
    {
        try
        {
            var log = await server.WaitForLogAsync(substring, window, from);
            Assert.Fail($"unexpected '{substring}' in the error log:\n{log}");
        }
        catch (TimeoutException)
        {
            // Good: it never appeared.
        }
    }

    /// <summary>Polls <paramref name="probe"/> until it returns true or the timeout ends; returns the last result.</summary>
    public static async Task<bool> EventuallyAsync(Func<Task<bool>> probe, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (await probe())
            {
                return true;
            }
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }
            await Task.Delay(50);
        }
    }

    [GeneratedRegex(@"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(?<level>[A-Z]+)\] ")]
    public static partial Regex LogLineRegex();
}
