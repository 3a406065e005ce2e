using System.Reflection;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>PEP 3333 environ: CGI keys, decoding rules, wsgi.* keys (served by tests/apps/environ_app.py).</summary>
public sealed class EnvironTests(ServerPool pool) : IClassFixture<ServerPool>
{
    private const string App = "environ_app:app";

    private async Task<(OspreyServer Server, JsonElement Environ)> RequestAsync(string engine, byte[]? request = null,
        string target = "/", params string[] headers)
    {
        var server = await pool.GetAsync(engine, App);
        var response = await RawHttp.SendAsync(server.Port, request ?? RawHttp.Get(target, server.Port, headers));
        return (server, Environ(response));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Required_cgi_keys_are_present_with_the_request_values(string engine)
    {
        var (server, env) = await RequestAsync(engine, target: "/some/path?q=1");

        Assert.Equal("GET", Str(env, "REQUEST_METHOD"));
        Assert.Equal("", Str(env, "SCRIPT_NAME"));
        Assert.Equal("/some/path", Str(env, "PATH_INFO"));
        Assert.Equal("q=1", Str(env, "QUERY_STRING"));
        Assert.Equal("127.0.0.1", Str(env, "SERVER_NAME"));
        Assert.Equal(server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), Str(env, "SERVER_PORT"));
        Assert.Equal("HTTP/1.1", Str(env, "SERVER_PROTOCOL"));
        Assert.Equal($"127.0.0.1:{server.Port}", Str(env, "HTTP_HOST"));
    }

    /// <summary>RFC 3875 §4.1.17 requires SERVER_SOFTWARE: "osprey/VERSION", the release `osprey --version` names (no "+commit").</summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Server_software_names_osprey_and_its_version(string engine)
    {
        string version = typeof(Osprey.Wsgi.WsgiApplication).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];
        var (_, env) = await RequestAsync(engine, target: "/software");
        Assert.Equal($"osprey/{version}", Str(env, "SERVER_SOFTWARE"));
        Assert.Matches(@"^osprey/\d+\.\d+\.\d+[^+]*$", Str(env, "SERVER_SOFTWARE"));

        // Still there, and the same, on the next request (it comes from the environ's template).
        var (_, again) = await RequestAsync(engine, target: "/software/again");
        Assert.Equal($"osprey/{version}", Str(again, "SERVER_SOFTWARE"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Every_cgi_key_is_a_native_str(string engine)
    {
        var (_, env) = await RequestAsync(engine, target: "/x?y=z", headers: ["X-Something: 1", "Accept: */*"]);

        // PEP 3333: keys without a dot (CGI and HTTP_ keys) hold str; environ_app describes non-str values as objects.
        var notStr = env.EnumerateObject()
            .Where(p => !p.Name.Contains('.', StringComparison.Ordinal) && p.Value.ValueKind != JsonValueKind.String)
            .Select(p => $"{p.Name}={p.Value}")
            .ToList();
        Assert.True(notStr.Count == 0, "non-str CGI values: " + string.Join("; ", notStr));
        Assert.Contains("HTTP_X_SOMETHING", Keys(env));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Header_value_bytes_are_decoded_as_latin1(string engine)
    {
        var (_, env) = await RequestAsync(engine, headers: ["X-Latin: caf\u00e9 \u00ff\u00a0end"]);

        // The header bytes 63 61 66 E9 ... arrive as the str 'café ÿ\xa0end' (each byte one code point).
        Assert.Equal("caf\u00e9 \u00ff\u00a0end", Str(env, "HTTP_X_LATIN"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Path_info_is_percent_decoded_to_bytes_then_latin1(string engine)
    {
        var (_, env) = await RequestAsync(engine, target: "/a%2Fb/%E9/%C3%A9/sp%20ace/%7euser");

        // %2F becomes '/', %E9 the single byte E9 -> 'é', UTF-8 %C3%A9 two bytes -> 'Ã©'.
        Assert.Equal("/a/b/\u00e9/\u00c3\u00a9/sp ace/~user", Str(env, "PATH_INFO"));
        Assert.Equal("", Str(env, "QUERY_STRING"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Query_string_is_passed_raw(string engine)
    {
        var (_, env) = await RequestAsync(engine, target: "/q?a=%20b&c=d%2F+e&&x=%E9&flag");

        Assert.Equal("a=%20b&c=d%2F+e&&x=%E9&flag", Str(env, "QUERY_STRING"));
        Assert.Equal("/q", Str(env, "PATH_INFO"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Query_string_is_empty_when_absent(string engine)
    {
        var (_, env) = await RequestAsync(engine, target: "/noquery");

        Assert.Equal("", Str(env, "QUERY_STRING"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Content_type_and_length_are_absent_when_not_sent(string engine)
    {
        var (_, env) = await RequestAsync(engine, target: "/nobody");

        var keys = Keys(env).ToList();
        Assert.DoesNotContain("CONTENT_TYPE", keys);
        Assert.DoesNotContain("CONTENT_LENGTH", keys);
        Assert.DoesNotContain("HTTP_CONTENT_TYPE", keys);
        Assert.DoesNotContain("HTTP_CONTENT_LENGTH", keys);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Content_type_and_length_are_set_when_sent(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var request = RawHttp.Request("POST", "/post", server.Port,
            ["Content-Type: application/x-www-form-urlencoded"], "a=1&b=2"u8.ToArray());
        var (_, env) = await RequestAsync(engine, request);

        Assert.Equal("POST", Str(env, "REQUEST_METHOD"));
        Assert.Equal("application/x-www-form-urlencoded", Str(env, "CONTENT_TYPE"));
        Assert.Equal("7", Str(env, "CONTENT_LENGTH"));
        var keys = Keys(env).ToList();
        Assert.DoesNotContain("HTTP_CONTENT_TYPE", keys);
        Assert.DoesNotContain("HTTP_CONTENT_LENGTH", keys);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Chunked_request_has_no_content_length(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var request = RawHttp.Request("POST", "/chunked", server.Port,
            ["Transfer-Encoding: chunked", "Content-Type: text/plain"], RawHttp.Chunked("abc", "de"));
        var (_, env) = await RequestAsync(engine, request);

        Assert.Equal("text/plain", Str(env, "CONTENT_TYPE"));
        Assert.DoesNotContain("CONTENT_LENGTH", Keys(env));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Other_headers_become_http_keys_and_repeats_are_joined_with_commas(string engine)
    {
        var (_, env) = await RequestAsync(engine, headers:
            ["X-Custom-Header: custom value", "X-Multi: a", "X-Multi: b", "X-Multi: c", "Accept-Language: fr", "user-agent: raw-test/1.0"]);

        Assert.Equal("custom value", Str(env, "HTTP_X_CUSTOM_HEADER"));
        Assert.Equal("a,b,c", Str(env, "HTTP_X_MULTI"));
        Assert.Equal("fr", Str(env, "HTTP_ACCEPT_LANGUAGE"));
        Assert.Equal("raw-test/1.0", Str(env, "HTTP_USER_AGENT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Headers_with_underscores_in_their_names_are_dropped(string engine)
    {
        var (_, env) = await RequestAsync(engine, headers:
            ["X-Forwarded-For: 5.6.7.8", "X_Forwarded_For: 1.2.3.4", "X_Only_Underscore: sneaky"]);

        // X_Forwarded_For must not be mistaken for (or merged into) X-Forwarded-For.
        Assert.Equal("5.6.7.8", Str(env, "HTTP_X_FORWARDED_FOR"));
        Assert.DoesNotContain(Keys(env), k => k.Contains("ONLY", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(env.EnumerateObject(), p => p.Value.ValueKind == JsonValueKind.String
            && (p.Value.GetString()!.Contains("1.2.3.4", StringComparison.Ordinal) || p.Value.GetString() == "sneaky"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Server_protocol_reflects_http_1_0(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        var (_, env) = await RequestAsync(engine, RawHttp.Request("GET", "/old", server.Port, version: "HTTP/1.0"));

        Assert.Equal("HTTP/1.0", Str(env, "SERVER_PROTOCOL"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Remote_addr_and_port_are_the_clients(string engine)
    {
        var server = await pool.GetAsync(engine, App);
        using var connection = await RawHttpConnection.OpenAsync(server.Port);
        await connection.SendAsync(RawHttp.Get("/", server.Port));
        var env = Environ(await connection.ReadResponseAsync());

        Assert.Equal("127.0.0.1", Str(env, "REMOTE_ADDR"));
        Assert.Equal(connection.LocalPort.ToString(System.Globalization.CultureInfo.InvariantCulture), Str(env, "REMOTE_PORT"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Wsgi_keys_have_the_required_values_and_types(string engine)
    {
        var (_, env) = await RequestAsync(engine);

        var version = Obj(env, "wsgi.version");
        Assert.Equal("tuple", version.GetProperty("type").GetString());
        Assert.Equal("(1, 0)", version.GetProperty("repr").GetString());

        Assert.Equal("http", Str(env, "wsgi.url_scheme"));

        AssertBool(env, "wsgi.run_once", false);
        AssertBool(env, "wsgi.multiprocess", false);
        AssertBool(env, "wsgi.input_terminated", true);
        Obj(env, "wsgi.multithread"); // value depends on --threads, see below

        var input = Strings(Obj(env, "wsgi.input").GetProperty("methods"));
        Assert.Superset(new HashSet<string> { "read", "readline", "readlines", "__iter__" }, input.ToHashSet());

        var errors = Strings(Obj(env, "wsgi.errors").GetProperty("methods"));
        Assert.Superset(new HashSet<string> { "write", "writelines", "flush" }, errors.ToHashSet());

        Assert.True(Obj(env, "wsgi.file_wrapper").GetProperty("callable").GetBoolean(), "wsgi.file_wrapper must be callable");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Multithread_is_true_with_several_threads(string engine)
    {
        var server = await pool.GetAsync(engine, App, "--threads", "4");
        var env = Environ(await RawHttp.GetAsync(server, "/"));

        AssertBool(env, "wsgi.multithread", true);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Multithread_is_false_with_one_thread(string engine)
    {
        var server = await pool.GetAsync(engine, App, "--threads", "1");
        var env = Environ(await RawHttp.GetAsync(server, "/"));

        AssertBool(env, "wsgi.multithread", false);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Root_path_becomes_script_name_and_is_removed_from_path_info(string engine)
    {
        var server = await pool.GetAsync(engine, App, "--root-path", "/prefix");

        var env = Environ(await RawHttp.GetAsync(server, "/prefix/x?k=v"));
        Assert.Equal("/prefix", Str(env, "SCRIPT_NAME"));
        Assert.Equal("/x", Str(env, "PATH_INFO"));
        Assert.Equal("k=v", Str(env, "QUERY_STRING"));

        var bare = Environ(await RawHttp.GetAsync(server, "/prefix"));
        Assert.Equal("/prefix", Str(bare, "SCRIPT_NAME"));
        Assert.Equal("", Str(bare, "PATH_INFO"));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task SCRIPT_NAME_in_the_environment_mounts_the_application_as_in_gunicorn(string engine)
    {
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = App, Engine = engine, Environment = new Dictionary<string, string?> { ["SCRIPT_NAME"] = "/mounted" },
        });

        var env = Environ(await RawHttp.GetAsync(server, "/mounted/page"));
        Assert.Equal("/mounted", Str(env, "SCRIPT_NAME"));
        Assert.Equal("/page", Str(env, "PATH_INFO"));
    }

    private static void AssertBool(JsonElement env, string key, bool expected)
    {
        var value = Obj(env, key);
        Assert.Equal("bool", value.GetProperty("type").GetString());
        Assert.Equal(expected ? "True" : "False", value.GetProperty("repr").GetString());
    }
}
