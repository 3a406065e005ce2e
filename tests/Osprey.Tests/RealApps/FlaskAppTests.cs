using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>
/// examples/flask_app served by Osprey: session-cookie login, form POST (Post/Redirect/Get), a 20 MB multipart upload
/// and its download through send_file, a streamed CSV, the JSON API, redirects, the custom 404 and 500 pages.
/// </summary>
public sealed class FlaskAppTests
{
    private static async Task<(TempDir Data, OspreyServer Server)> StartAsync(string engine)
    {
        var data = TempDir.Create("osprey-flask-");
        try
        {
            return (data, await Examples.StartOspreyAsync(engine, Examples.FlaskDir, Examples.FlaskApp,
                Examples.FlaskEnvironment(data.Path)));
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    private static async Task LogInAsync(Browserless user)
    {
        var (response, body) = await user.PostFormAsync("/login",
            [new("username", Examples.FlaskUser), new("password", Examples.FlaskPassword)]);
        Assert.True(response.StatusCode == HttpStatusCode.Found, response.Describe(body));
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Session_login_form_post_redirects_and_error_pages(string engine)
    {
        var (data, server) = await StartAsync(engine);
        using var dataScope = data;
        await using var serverScope = server;
        using var user = new Browserless(server.BaseAddress);

        var (response, body) = await user.GetAsync("/notes");
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/login?next=%2Fnotes", response.Location());

        (response, body) = await user.PostFormAsync("/login?next=%2Fnotes",
            [new("username", Examples.FlaskUser), new("password", "wrong")]);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("Wrong user name or password.", body, StringComparison.Ordinal);
        Assert.Null(user.Cookie("session"));

        (response, body) = await user.PostFormAsync("/login?next=%2Fnotes",
            [new("username", Examples.FlaskUser), new("password", Examples.FlaskPassword)]);
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/notes", response.Location());
        var setCookie = Assert.Single(response.Headers.GetValues("Set-Cookie"));
        Assert.StartsWith("session=", setCookie, StringComparison.Ordinal);
        Assert.Contains("; HttpOnly", setCookie, StringComparison.Ordinal);
        Assert.Contains("; SameSite=Lax", setCookie, StringComparison.Ordinal);
        Assert.Contains("; Path=/", setCookie, StringComparison.Ordinal);

        (response, body) = await user.GetAsync("/notes");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Signed in as <b id=\"user\">demo</b>", body, StringComparison.Ordinal);
        Assert.Contains("Welcome, demo.", body, StringComparison.Ordinal);

        // Form POST, then the redirect-after-POST (303) back to the list, which shows the note escaped.
        (response, body) = await user.PostFormAsync("/notes", [new("text", "Zoë <b>bold</b> & co")]);
        Assert.Equal(HttpStatusCode.SeeOther, response.StatusCode);
        Assert.Equal("/notes", response.Location());
        (response, body) = await user.GetAsync("/notes");
        Assert.Contains("<li>demo: Zoë &lt;b&gt;bold&lt;/b&gt; &amp; co</li>", body, StringComparison.Ordinal);
        Assert.Contains("Note saved.", body, StringComparison.Ordinal);
        (response, body) = await user.PostFormAsync("/notes", [new("text", "  ")]);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);

        (response, _) = await user.GetAsync("/old-home");
        Assert.Equal(HttpStatusCode.MovedPermanently, response.StatusCode);
        Assert.Equal("/", response.Location());

        (response, body) = await user.GetAsync("/no/such/page");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<p id=\"missing\">Nothing lives at /no/such/page.</p>", body, StringComparison.Ordinal);

        var logPosition = server.ErrorLogPosition;
        (response, body) = await user.GetAsync("/boom");
        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Contains("<p id=\"oops\">", body, StringComparison.Ordinal);
        // Flask logs the exception to wsgi.errors, which is Osprey's error log.
        await server.WaitForLogAsync("RuntimeError: the /boom route always fails", TimeSpan.FromSeconds(5), logPosition);

        (response, _) = await user.PostFormAsync("/logout", []);
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/", response.Location());
        (response, _) = await user.GetAsync("/notes");
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Multipart_upload_of_20_MB_and_send_file_download(string engine)
    {
        var (data, server) = await StartAsync(engine);
        using var dataScope = data;
        await using var serverScope = server;
        using var user = new Browserless(server.BaseAddress);
        await LogInAsync(user);

        var payload = Examples.Payload(20 * 1024 * 1024, seed: 11);
        using var form = new MultipartFormDataContent
        {
            { new StringContent("twenty megabytes"), "description" },
        };
        var file = new ByteArrayContent(payload);
        file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        form.Add(file, "file", "big upload.bin");
        var (response, body) = await user.PostAsync("/upload", form);
        Assert.True(response.StatusCode == HttpStatusCode.Created, response.Describe(body));
        using var json = JsonDocument.Parse(body);
        Assert.Equal(payload.Length, json.RootElement.GetProperty("size").GetInt32());
        Assert.Equal(Examples.Sha256(payload), json.RootElement.GetProperty("sha256").GetString());
        Assert.Equal("twenty megabytes", json.RootElement.GetProperty("description").GetString());
        Assert.Equal("/files/big_upload.bin", json.RootElement.GetProperty("url").GetString());
        Assert.Equal(payload.Length, new FileInfo(Path.Combine(data.Path, "big_upload.bin")).Length);

        using var download = await user.Client.GetAsync("/files/big_upload.bin");
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal("attachment", download.Content.Headers.ContentDisposition?.DispositionType);
        Assert.Equal("big_upload.bin", download.Content.Headers.ContentDisposition?.FileName);
        Assert.Equal(payload.Length, download.Content.Headers.ContentLength);
        Assert.Equal(Examples.Sha256(payload), Examples.Sha256(await download.Content.ReadAsByteArrayAsync()));

        // Without the session cookie the file is not handed out.
        var raw = await RawHttp.GetAsync(server, "/files/big_upload.bin");
        Assert.Equal(302, raw.StatusCode);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Streamed_csv_is_chunked_and_complete(string engine)
    {
        var (data, server) = await StartAsync(engine);
        using var dataScope = data;
        await using var serverScope = server;

        var response = await RawHttp.GetAsync(server, "/export.csv?rows=5000");
        Assert.Equal(200, response.StatusCode);
        Assert.Equal("text/csv; charset=utf-8", response.Header("Content-Type"));
        Assert.Equal("attachment; filename=export.csv", response.Header("Content-Disposition"));
        Assert.Equal(BodyFraming.Chunked, response.Framing);
        Assert.True(response.Complete);
        var lines = response.BodyText.Split("\r\n");
        Assert.Equal(5002, lines.Length); // header, 5000 rows, "" after the last CRLF
        Assert.Equal("id,name,square", lines[0]);
        Assert.Equal("5000,\"row \"\"5000\"\", with comma\",25000000", lines[5000]);
        Assert.Equal("", lines[5001]);
    }

    /// <summary>
    /// Found by the gunicorn differential. For HEAD, werkzeug (like most frameworks) returns an empty iterable and
    /// no Content-Length on purpose; a computed "Content-Length: 0" would tell the client that a GET returns an
    /// empty body (RFC 9110 9.3.2 / 8.6: a Content-Length in a HEAD response must be the length a GET would have).
    /// gunicorn sends none, and neither may Osprey.
    /// </summary>
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Head_of_a_streamed_response_does_not_claim_an_empty_body(string engine)
    {
        var (data, server) = await StartAsync(engine);
        using var dataScope = data;
        await using var serverScope = server;

        var get = await RawHttp.GetAsync(server, "/export.csv?rows=300");
        Assert.Equal(BodyFraming.Chunked, get.Framing);
        Assert.True(get.Body.Length > 10_000);
        var head = await RawHttp.SendAsync(server.Port, RawHttp.Request("HEAD", "/export.csv?rows=300", server.Port), headRequest: true);

        Assert.Equal(200, head.StatusCode);
        Assert.Equal(get.Header("Content-Type"), head.Header("Content-Type"));
        Assert.True(head.Header("Content-Length") is null,
            $"HEAD claims Content-Length: {head.Header("Content-Length")}, but GET sends a chunked body of {get.Body.Length} bytes:\n{head}");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Json_api(string engine)
    {
        var (data, server) = await StartAsync(engine);
        using var dataScope = data;
        await using var serverScope = server;
        using var user = new Browserless(server.BaseAddress);

        using var created = await user.Client.PostAsync("/api/items",
            new StringContent("{\"name\": \"Kestrel\", \"tags\": [\"bird\", \"falcon\"]}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal("/api/items/1", created.Location());
        Assert.Equal("application/json", created.Content.Headers.ContentType?.MediaType);
        using (var item = JsonDocument.Parse(await created.Content.ReadAsStringAsync()))
        {
            Assert.Equal(1, item.RootElement.GetProperty("id").GetInt32());
            Assert.Equal("falcon", item.RootElement.GetProperty("tags")[1].GetString());
        }

        using var bad = await user.Client.PostAsync("/api/items", new StringContent("[1, 2", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);

        var (response, body) = await user.GetAsync("/api/items");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var list = JsonDocument.Parse(body))
        {
            Assert.Equal("Kestrel", Assert.Single(list.RootElement.GetProperty("items").EnumerateArray()).GetProperty("name").GetString());
        }

        using var deleted = await user.Client.DeleteAsync("/api/items/1");
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        (response, body) = await user.GetAsync("/api/items/1");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        using (var error = JsonDocument.Parse(body))
        {
            Assert.Equal("no item 1", error.RootElement.GetProperty("error").GetString());
        }
    }
}
