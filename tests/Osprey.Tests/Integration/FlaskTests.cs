using System.Text;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Integration;

/// <summary>A real framework: Flask (Debian python3-flask) page, form POST, JSON, streamed response, send_file (flask_app.py).</summary>
public sealed class FlaskTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private Task<OspreyServer> ServerAsync(string engine) => pool.GetAsync(engine, "flask_app:app", "--threads", "2");

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Page(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("text/html; charset=utf-8", response.Header("Content-Type"));
        Assert.Equal("<h1>Hello from Flask</h1>", response.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Form_post(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.SendAsync(server.Port, RawHttp.Request("POST", "/form", server.Port,
            ["Content-Type: application/x-www-form-urlencoded"], "name=Zo%C3%AB&n=7"u8.ToArray()));

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("name=Zoë;n=7", response.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Json_response(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/json");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("application/json", response.Header("Content-Type"));
        var json = response.Json();
        Assert.Equal("hi", json.GetProperty("message").GetString());
        Assert.Equal([1, 2, 3], json.GetProperty("numbers").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal("/json", json.GetProperty("path").GetString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Json_post_is_echoed(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.SendAsync(server.Port, RawHttp.Request("POST", "/json_echo", server.Port,
            ["Content-Type: application/json"], Encoding.UTF8.GetBytes("{\"a\": [1, \"x\"], \"é\": true}")));

        Assert.Equal(200, response.StatusCode);
        var received = response.Json().GetProperty("received");
        Assert.Equal(2, received.GetProperty("a").GetArrayLength());
        Assert.Equal("x", received.GetProperty("a")[1].GetString());
        Assert.True(received.GetProperty("é").GetBoolean());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Streamed_response(string engine)
    {
        var server = await ServerAsync(engine);
        var response = await RawHttp.GetAsync(server, "/stream?tag=t1");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.True(response.Complete);
        Assert.Equal("part0;t1\npart1;t1\npart2;t1\n", response.BodyText);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Send_file(string engine)
    {
        var server = await ServerAsync(engine);
        var expected = await File.ReadAllBytesAsync(Path.Combine(RepoPaths.Apps, "static", "hello.txt"));
        var response = await RawHttp.GetAsync(server, "/file");

        Assert.Equal(200, response.StatusCode);
        Assert.Equal("text/plain; charset=utf-8", response.Header("Content-Type"));
        Assert.Equal(expected.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), response.Header("Content-Length"));
        Assert.Equal(expected, response.Body);
    }
}
