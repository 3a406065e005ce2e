using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Integration;

/// <summary>An app wrapped in wsgiref.validate.validator (warnings as errors) sees no PEP 3333 violation (validated_app.py).</summary>
public sealed class ValidatorTests
{
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Wsgiref_validator_finds_no_violation(string engine)
    {
        await using var server = await OspreyServer.StartAsync(engine, "validated_app:app");

        var get = await RawHttp.GetAsync(server, "/v/x?a=1");
        Assert.True(get.StatusCode == 200, $"{get}\n--- error log ---\n{server.ErrorLog}");
        Assert.Equal("method=GET;path=/v/x;query=a=1;first=b'';rest=b''", get.BodyText);

        var post = await RawHttp.SendAsync(server.Port, RawHttp.Request("POST", "/post", server.Port,
            ["Content-Type: text/plain"], "first line\nrest of body"u8.ToArray()));
        Assert.True(post.StatusCode == 200, $"{post}\n--- error log ---\n{server.ErrorLog}");
        Assert.Equal("method=POST;path=/post;query=;first=b'first line\\n';rest=b'rest of body'", post.BodyText);

        var head = await RawHttp.SendAsync(server.Port, RawHttp.Request("HEAD", "/h", server.Port), headRequest: true);
        Assert.True(head.StatusCode == 200, $"{head}\n--- error log ---\n{server.ErrorLog}");

        // The validator reports some problems (e.g. an iterable never closed) only when objects are collected.
        await Task.Delay(300);
        var log = server.ErrorLog;
        Assert.DoesNotContain("Warning", log, StringComparison.Ordinal);
        Assert.DoesNotContain("AssertionError", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Traceback", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception ignored", log, StringComparison.Ordinal);
    }
}
