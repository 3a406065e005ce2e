using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>
/// gunicorn (Debian's package, sync worker) is the oracle: the same request sequence is sent to the same application
/// under gunicorn and under Osprey, and the normalised exchanges must be identical (see <see cref="DiffClient"/> for
/// exactly what is normalised and why). Covers examples/flask_app, examples/django_site and the raw apps of tests/apps.
/// </summary>
public sealed partial class DifferentialTests
{
    private static readonly HashSet<string> NoSecrets = [];

    private static async Task<List<Exchange>> RunAsync(Func<Task<(IAsyncDisposable Server, int Port)>> start,
        Func<int, DiffClient> client, Func<DiffClient, Task> scenario)
    {
        var (server, port) = await start();
        await using (server)
        {
            var diff = client(port);
            await scenario(diff);
            return diff.Exchanges;
        }
    }

    /// <summary>A step where gunicorn is the one that is wrong (against PEP 3333 or an RFC): both sides are asserted explicitly.</summary>
    private sealed record Deviation(string Why, Action<Exchange, Exchange> Check);

    private static async Task CompareAsync(string engine, string chdir, string app, Func<Task<IReadOnlyDictionary<string, string?>>> environment,
        Func<int, DiffClient> client, Func<DiffClient, Task> scenario, IReadOnlyDictionary<string, Deviation>? deviations = null)
    {
        var oracle = await RunAsync(async () =>
        {
            var server = await GunicornServer.StartAsync(chdir, app, await environment());
            return (server, server.Port);
        }, client, scenario);
        var osprey = await RunAsync(async () =>
        {
            var server = await OspreyServer.StartAsync(new OspreyServerOptions
            {
                Engine = engine, App = app, Chdir = chdir, Python = RepoPaths.SystemPython,
                Args = ["--threads", "1"], Environment = await environment(),
            });
            return (server, server.Port);
        }, client, scenario);
        foreach (var (step, deviation) in deviations ?? new Dictionary<string, Deviation>())
        {
            var g = Assert.Single(oracle, e => e.Step == step);
            var o = Assert.Single(osprey, e => e.Step == step);
            try
            {
                deviation.Check(g, o);
            }
            catch (Exception e)
            {
                throw new InvalidOperationException($"{step}: documented deviation ({deviation.Why}) no longer as described:\n{e.Message}\n"
                                                    + $"=== gunicorn ===\n{g}\n=== Osprey ===\n{o}", e);
            }
            oracle.Remove(g);
            osprey.Remove(o);
        }
        DiffClient.AssertSame(oracle, osprey, $"{app} in {Path.GetFileName(chdir)}");
    }

    // ---------------------------------------------------------------- examples/flask_app

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Flask_example(string engine)
    {
        var dirs = new List<TempDir>();
        try
        {
            await CompareAsync(engine, Examples.FlaskDir, Examples.FlaskApp,
                () =>
                {
                    var data = TempDir.Create("osprey-flask-diff-");
                    dirs.Add(data);
                    return Task.FromResult<IReadOnlyDictionary<string, string?>>(Examples.FlaskEnvironment(data.Path));
                },
                port => new DiffClient(port, new HashSet<string>(), [], signedCookies: new Dictionary<string, Regex>
                {
                    // itsdangerous: [.]payload.timestamp.signature; the payload (user, flashed messages) is compared.
                    ["session"] = FlaskSessionRegex(),
                }),
                FlaskScenarioAsync);
        }
        finally
        {
            dirs.ForEach(d => d.Dispose());
        }
    }

    private static async Task FlaskScenarioAsync(DiffClient c)
    {
        await c.GetAsync("home", "/");
        await c.GetAsync("login page", "/login");
        await c.GetAsync("protected page", "/notes");
        await c.PostFormAsync("/login", [new("username", Examples.FlaskUser), new("password", "wrong")]);
        await c.PostFormAsync("/login?next=%2Fnotes", [new("username", Examples.FlaskUser), new("password", Examples.FlaskPassword)]);
        await c.GetAsync("notes", "/notes");
        await c.PostFormAsync("/notes", [new("text", "Zoë <i>x</i> & y")]);
        await c.GetAsync("notes", "/notes");
        await c.PostFormAsync("/notes", [new("text", "")]);
        await c.GetAsync("redirect", "/old-home");
        await c.GetAsync("404", "/no/such/page");
        await c.GetAsync("500", "/boom");
        await c.GetAsync("csv", "/export.csv?rows=300");
        await c.SendAsync("csv", "GET", "/export.csv?rows=300", version: "HTTP/1.0");
        await c.SendAsync("csv", "HEAD", "/export.csv?rows=300");
        await c.SendAsync("api", "POST", "/api/items", ["Content-Type: application/json"], "{\"name\": \"Kestrel\", \"tags\": [\"a\"]}"u8.ToArray());
        await c.SendAsync("api", "POST", "/api/items", ["Content-Type: application/json"], "{\"name\": 1"u8.ToArray());
        await c.GetAsync("api", "/api/items");
        await c.GetAsync("api", "/api/items/1");
        await c.SendAsync("api", "DELETE", "/api/items/1");
        await c.GetAsync("api", "/api/items/1");
        await c.PostMultipartAsync("/upload", [new("description", "two megabytes")], "file", "up load.bin",
            Examples.Payload(2 * 1024 * 1024, seed: 3));
        await c.GetAsync("send_file", "/files/up_load.bin", new StepOptions { FileWrittenDuringRun = true });
        await c.SendAsync("send_file", "HEAD", "/files/up_load.bin", options: new StepOptions { FileWrittenDuringRun = true });
        await c.GetAsync("send_file", "/files/missing.bin");
        await c.SendAsync("method not allowed", "PUT", "/notes", body: "x"u8.ToArray());
        await c.PostFormAsync("/logout", []);
        await c.GetAsync("protected page", "/notes");
    }

    // ---------------------------------------------------------------- examples/django_site

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Django_example(string engine)
    {
        var dirs = new List<TempDir>();
        try
        {
            await CompareAsync(engine, Examples.DjangoDir, Examples.DjangoApp,
                async () =>
                {
                    var data = await Examples.PrepareDjangoAsync();
                    dirs.Add(data);
                    return Examples.DjangoEnvironment(data.Path);
                },
                port => new DiffClient(port, new HashSet<string> { "csrftoken", "sessionid" },
                    [(DjangoAdminTests.CsrfRegex(), "name=\"csrfmiddlewaretoken\" value=\"<per-run secret>\"")],
                    signedCookies: new Dictionary<string, Regex>
                    {
                        // django.core.signing: payload:timestamp:signature; the payload (the messages) is compared.
                        ["messages"] = DjangoSignedRegex(),
                    }),
                DjangoScenarioAsync);
        }
        finally
        {
            dirs.ForEach(d => d.Dispose());
        }
    }

    private static async Task DjangoScenarioAsync(DiffClient c)
    {
        await c.GetAsync("root", "/");
        await c.GetAsync("admin, logged out", "/admin/");
        var page = await c.GetAsync("login page", "/admin/login/?next=/admin/");
        var token = DjangoAdminTests.CsrfToken(page.BodyText);
        await c.PostFormAsync("/admin/login/?next=/admin/", [new("username", Examples.DjangoUser), new("password", "x")]);
        await c.PostFormAsync("/admin/login/?next=/admin/",
            [new("csrfmiddlewaretoken", token), new("username", Examples.DjangoUser), new("password", "wrong"), new("next", "/admin/")]);
        await c.PostFormAsync("/admin/login/?next=/admin/",
            [new("csrfmiddlewaretoken", token), new("username", Examples.DjangoUser), new("password", Examples.DjangoPassword), new("next", "/admin/")]);
        await c.GetAsync("admin index", "/admin/");
        page = await c.GetAsync("add page", "/admin/documents/document/add/");
        await c.PostMultipartAsync("/admin/documents/document/add/",
            [new("csrfmiddlewaretoken", DjangoAdminTests.CsrfToken(page.BodyText)), new("title", "Report"), new("notes", "n"), new("_save", "Save")],
            "attachment", "report.bin", Examples.Payload(1024 * 1024 + 7, seed: 5));
        await c.GetAsync("change list", "/admin/documents/document/");
        page = await c.GetAsync("change page", "/admin/documents/document/1/change/");
        await c.PostMultipartAsync("/admin/documents/document/1/change/",
            [new("csrfmiddlewaretoken", DjangoAdminTests.CsrfToken(page.BodyText)), new("title", "Report (edited)"), new("notes", "m"), new("_save", "Save")],
            "attachment", "", []);
        await c.GetAsync("change list", "/admin/documents/document/?q=edited");
        await c.GetAsync("media", "/media/documents/report.bin", new StepOptions { FileWrittenDuringRun = true });
        await c.SendAsync("media", "HEAD", "/media/documents/report.bin", options: new StepOptions { FileWrittenDuringRun = true });
        await c.GetAsync("static", "/static/admin/css/base.css");
        await c.SendAsync("static", "GET", "/static/admin/css/base.css", ["If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"]);
        await c.GetAsync("static", "/static/admin/js/core.js");
        await c.GetAsync("static 404", "/static/admin/missing.css");
        await c.SendAsync("static", "POST", "/static/admin/css/base.css", body: []);
        await c.GetAsync("404", "/admin/documents/document/999/change/");
        await c.GetAsync("404", "/nothing-here/");
        await c.GetAsync("append slash", "/admin/documents/document");
        await c.GetAsync("logout", "/admin/logout/");
        await c.GetAsync("admin, logged out", "/admin/");
    }

    // ---------------------------------------------------------------- tests/apps

    private static Func<Task<IReadOnlyDictionary<string, string?>>> NoEnvironment =>
        () => Task.FromResult<IReadOnlyDictionary<string, string?>>(new Dictionary<string, string?> { ["PYTHONDONTWRITEBYTECODE"] = "1" });

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public Task Response_app(string engine) =>
        CompareAsync(engine, RepoPaths.Apps, "response_app:app", NoEnvironment,
            // PEP 3333 says start_response must raise on bad headers, not which exception: gunicorn raises its own
            // InvalidHeader/InvalidHeaderName, Osprey ValueError. That start_response raised is still compared.
            port => new DiffClient(port, NoSecrets, [(CaughtRegex(), "caught:<an exception>")]), async c =>
        {
            var serverError = new StepOptions { ServerGenerated = true };
            foreach (var path in (string[])["/list1", "/list3", "/gen", "/empty_gen", "/cl_short", "/cl_long", "/204", "/304",
                         "/head", "/write", "/write_mixed", "/exc_info_before", "/exc_info_after", "/double_start",
                         "/raise_after_headers", "/filewrapper", "/filewrapper_nocl", "/filewrapper_bytesio", "/no-such-route",
                         "/bad_header_crlf", "/bad_header_lf", "/bad_header_name", "/bad_header_hop", "/non_latin1_header",
                         "/bytes_header", "/bad_status?s=200", "/bad_status?s=2000%20OK", "/bad_status?s=299%20Custom%20Reason"])
            {
                await c.GetAsync(path, path);
            }
            foreach (var path in (string[])["/str_body", "/bare_str_body", "/none_body", "/int_body", "/raise"])
            {
                await c.GetAsync(path, path, serverError);
            }
            foreach (var path in (string[])["/head", "/list3", "/gen", "/filewrapper"])
            {
                await c.SendAsync(path, "HEAD", path);
            }
            foreach (var path in (string[])["/list1", "/gen", "/filewrapper_nocl", "/204"])
            {
                await c.SendAsync(path, "GET", path, version: "HTTP/1.0");
            }
            await c.SendAsync("/expect", "POST", "/expect", ["Expect: 100-continue"], "abc"u8.ToArray(),
                options: new StepOptions { ContinueMayBeOmitted = true });
        }, ResponseAppDeviations);

    private const string Caught = "caught:<an exception>";

    /// <summary>Where gunicorn 20.1 (Debian 12) is the one that is wrong; each is asserted on both sides.</summary>
    private static readonly Dictionary<string, Deviation> ResponseAppDeviations = new()
    {
        ["GET /bad_header_hop HTTP/1.1"] = new(
            "PEP 3333: applications must not send hop-by-hop headers, a server may treat it as a fatal error; gunicorn silently drops the app's 'Connection: close' (and so sends no Content-Type at all), Osprey's start_response raises",
            (g, o) =>
            {
                Assert.Equal("caught:none", g.Body);
                Assert.DoesNotContain(g.Headers, h => h.StartsWith("content-type:", StringComparison.Ordinal));
                Assert.Equal(Caught, o.Body);
            }),
        ["GET /bad_status?s=200 HTTP/1.1"] = new(
            "PEP 3333: status is 'NNN reason'; gunicorn accepts '200' and sends 'HTTP/1.1 200 ' (empty reason), Osprey's start_response raises",
            (g, o) =>
            {
                Assert.Equal("HTTP/1.1 200 ", g.Status);
                Assert.Equal("caught:none", g.Body);
                Assert.Equal(Caught, o.Body);
            }),
        ["GET /bad_status?s=2000%20OK HTTP/1.1"] = new(
            "RFC 9112 4: the status code is three digits; gunicorn sends the invalid status line 'HTTP/1.1 2000 OK', Osprey's start_response raises",
            (g, o) =>
            {
                Assert.Equal("HTTP/1.1 2000 OK", g.Status);
                Assert.Equal(Caught, o.Body);
            }),
        ["GET /exc_info_before HTTP/1.1"] = new(
            "PEP 3333: start_response with exc_info before anything was sent replaces status and headers; gunicorn keeps the first call's headers too (X-First, a second Content-Type)",
            (g, o) =>
            {
                Assert.Contains("x-first: yes", g.Headers);
                Assert.Equal(2, g.Headers.Count(h => h.StartsWith("content-type:", StringComparison.Ordinal)));
                Assert.DoesNotContain("x-first: yes", o.Headers);
                Assert.Equal(["content-length: 13", "content-type: text/plain", "x-handled: exc_info"], o.Headers);
                Assert.Equal("HTTP/1.1 500 Internal Server Error", o.Status);
                Assert.Equal(g.Body, o.Body);
            }),
        ["GET /str_body HTTP/1.1"] = new(
            "PEP 3333: the body is bytestrings and headers go out with the first non-empty one; gunicorn sends '200' and its headers before finding the str and cuts the response, Osprey answers 500",
            (g, o) =>
            {
                Assert.StartsWith("200 ", g.Status, StringComparison.Ordinal);
                Assert.StartsWith("500 ", o.Status, StringComparison.Ordinal);
            }),
        ["GET /bare_str_body HTTP/1.1"] = new(
            "same as /str_body, with a bare str returned",
            (g, o) =>
            {
                Assert.StartsWith("200 ", g.Status, StringComparison.Ordinal);
                Assert.StartsWith("500 ", o.Status, StringComparison.Ordinal);
            }),
    };

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public Task Flask_test_app(string engine) =>
        CompareAsync(engine, RepoPaths.Apps, "flask_app:app", NoEnvironment, port => new DiffClient(port, NoSecrets, []), async c =>
        {
            await c.GetAsync("/", "/");
            await c.SendAsync("/form", "POST", "/form", ["Content-Type: application/x-www-form-urlencoded"], "name=Zo%C3%AB&n=7"u8.ToArray());
            await c.SendAsync("/form", "POST", "/form", ["Content-Type: application/x-www-form-urlencoded"], "name=x"u8.ToArray());
            await c.GetAsync("/json", "/json");
            await c.SendAsync("/json_echo", "POST", "/json_echo", ["Content-Type: application/json"], "{\"a\": [1, \"\u00e9\"]}"u8.ToArray());
            await c.GetAsync("/stream", "/stream?tag=t");
            await c.SendAsync("/stream", "GET", "/stream?tag=t", version: "HTTP/1.0");
            await c.GetAsync("/file", "/file");
            await c.SendAsync("/file", "HEAD", "/file");
            await c.GetAsync("404", "/missing");
        });

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public Task Input_app(string engine) =>
        CompareAsync(engine, RepoPaths.Apps, "input_app:app", NoEnvironment, port => new DiffClient(port, NoSecrets, []), async c =>
        {
            var text = "first line\nsecond\n\nlast without newline"u8.ToArray();
            // Not /readlines_hint: PEP 3333 leaves readlines(hint) to the server (gunicorn ignores the hint, Osprey stops
            // after the hint as io.IOBase does), and applications must not rely on it.
            foreach (var path in (string[])["/read", "/readn?n=3", "/readline", "/readline_n?n=4", "/readlines", "/iter"])
            {
                await c.SendAsync(path, "POST", path, ["Content-Type: text/plain"], text);
            }
            await c.SendAsync("chunked", "POST", "/read", ["Transfer-Encoding: chunked"], RawHttp.Chunked("abc", "defgh", "\n", "ij"));
            await c.SendAsync("empty", "POST", "/read", ["Content-Length: 0"]);
            await c.SendAsync("no body", "GET", "/read");
            var big = Examples.Payload(3 * 1024 * 1024, seed: 9);
            await c.SendAsync("big", "POST", "/sha256?n=65536", body: big);
            await c.SendAsync("big", "POST", "/sha256?n=0", body: big);
            await c.SendAsync("ignored", "POST", "/ignore", body: Examples.Payload(100_000, seed: 1));
            await c.SendAsync("404", "POST", "/nope", body: "x"u8.ToArray());
        });

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public Task Environ_app(string engine) =>
        CompareAsync(engine, RepoPaths.Apps, "environ_app:app", NoEnvironment,
            port => new DiffClient(port, NoSecrets, [], body => PortableEnviron(body, port)), async c =>
            {
                await c.GetAsync("plain", "/");
                await c.SendAsync("escapes", "GET", "/a%20b/%C3%A9/%2F/x?y=1&z=%2F&w",
                    ["X-Custom: v a l", "X-Multi: 1", "X-Multi: 2", "Accept-Language: fr"]);
                await c.SendAsync("post", "POST", "/submit?x", ["Content-Type: text/plain; charset=utf-8"], "hello"u8.ToArray());
                await c.SendAsync("host", "GET", "/h", ["Host: example.com:8080"]);
                await c.SendAsync("host without port", "GET", "/h", ["Host: example.com"]);
                await c.SendAsync("http/1.0", "GET", "/old", version: "HTTP/1.0");
                await c.SendAsync("latin-1 header", "GET", "/l", ["X-Latin: caf\u00e9"]);
                await c.SendAsync("options", "OPTIONS", "/o");
            });

    [GeneratedRegex(@"^(?<payload>\.?[^.]+)\.[^.]+\.[^.]+$")]
    private static partial Regex FlaskSessionRegex();

    [GeneratedRegex(@"^(?<payload>.+):[0-9A-Za-z]+:[A-Za-z0-9_-]+$")]
    private static partial Regex DjangoSignedRegex();

    [GeneratedRegex(@"^caught:(?!none$)\w+$")]
    private static partial Regex CaughtRegex();

    /// <summary>
    /// environ_app's JSON reduced to what PEP 3333 defines and both servers must agree on. Left out: REMOTE_PORT
    /// (ephemeral), SERVER_SOFTWARE, the object types of wsgi.input/errors/file_wrapper, and server extensions
    /// (gunicorn's RAW_URI and gunicorn.socket). The listening port, which differs per server, reads "&lt;port&gt;".
    /// When the Host header names another host than the socket, SERVER_NAME/SERVER_PORT are left out too: gunicorn
    /// takes them from the socket, Osprey from Host (as waitress does and PEP 3333's URL reconstruction implies);
    /// both are allowed, and HTTP_HOST, which applications use, is compared.
    /// </summary>
    private static string PortableEnviron(string body, int port)
    {
        var environ = JsonNode.Parse(body)!["environ"]!.AsObject();
        var hostIsSocket = environ["HTTP_HOST"]?.GetValue<string>() == $"127.0.0.1:{port}";
        var kept = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in environ)
        {
            var portable = key is "REQUEST_METHOD" or "SCRIPT_NAME" or "PATH_INFO" or "QUERY_STRING" or "CONTENT_TYPE"
                               or "CONTENT_LENGTH" or "SERVER_NAME" or "SERVER_PORT" or "SERVER_PROTOCOL" or "REMOTE_ADDR"
                               or "wsgi.version" or "wsgi.url_scheme" or "wsgi.multithread" or "wsgi.multiprocess"
                               or "wsgi.run_once" or "wsgi.input_terminated"
                           || key.StartsWith("HTTP_", StringComparison.Ordinal);
            if (!portable || value is null || (!hostIsSocket && key is "SERVER_NAME" or "SERVER_PORT"))
            {
                continue;
            }
            var text = value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : value["repr"]?.GetValue<string>() ?? value.ToJsonString();
            kept[key] = text.Replace(port.ToString(System.Globalization.CultureInfo.InvariantCulture), "<port>", StringComparison.Ordinal);
        }
        return string.Join("\n", kept.Select(p => $"{p.Key}={p.Value}"));
    }
}
