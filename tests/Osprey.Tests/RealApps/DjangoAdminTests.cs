using System.Net;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>
/// examples/django_site served by Osprey, driven like a user drives the admin: CSRF-protected login form, create an
/// object with a 20 MB upload, edit it, download the file back byte-identical, log out.
/// </summary>
public sealed partial class DjangoAdminTests
{
    private const int UploadSize = 20 * 1024 * 1024;

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Admin_login_create_edit_upload_download_logout(string engine)
    {
        using var data = await Examples.PrepareDjangoAsync();
        await using var server = await Examples.StartOspreyAsync(engine, Examples.DjangoDir, Examples.DjangoApp,
            Examples.DjangoEnvironment(data.Path));
        using var user = new Browserless(server.BaseAddress);

        // Not logged in: the admin sends us to its login page.
        var (response, body) = await user.GetAsync("/admin/");
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/admin/login/?next=/admin/", response.Location());

        (response, body) = await user.GetAsync("/admin/login/?next=/admin/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("<title>Log in | Django site admin</title>", body, StringComparison.Ordinal);
        Assert.NotNull(user.Cookie("csrftoken"));
        var token = CsrfToken(body);

        // The CSRF protection holds: a POST without the form token is refused.
        (response, body) = await user.PostFormAsync("/admin/login/?next=/admin/", [
            new("username", Examples.DjangoUser), new("password", Examples.DjangoPassword), new("next", "/admin/")]);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Contains("CSRF verification failed", body, StringComparison.Ordinal);

        // A wrong password is a form error, not a login.
        (response, body) = await user.PostFormAsync("/admin/login/?next=/admin/", LoginFields(token, "wrong-password"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Please enter the correct username and password", body, StringComparison.Ordinal);
        Assert.Null(user.Cookie("sessionid"));

        (response, body) = await user.PostFormAsync("/admin/login/?next=/admin/", LoginFields(token, Examples.DjangoPassword));
        Assert.True(response.StatusCode == HttpStatusCode.Found, response.Describe(body));
        Assert.Equal("/admin/", response.Location());
        Assert.NotNull(user.Cookie("sessionid"));

        (response, body) = await user.GetAsync("/admin/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Site administration", body, StringComparison.Ordinal);
        Assert.Contains("/admin/documents/document/", body, StringComparison.Ordinal);

        // Create a document with a 20 MB attachment (multipart, spooled to a temporary file by Django).
        (response, body) = await user.GetAsync("/admin/documents/document/add/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var payload = Examples.Payload(UploadSize, seed: 7);
        using (var form = new MultipartFormDataContent())
        {
            form.Add(new StringContent(CsrfToken(body)), "csrfmiddlewaretoken");
            form.Add(new StringContent("Quarterly report"), "title");
            form.Add(new StringContent("Uploaded through Osprey."), "notes");
            var file = new ByteArrayContent(payload);
            file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            form.Add(file, "attachment", "report.bin");
            form.Add(new StringContent("Save"), "_save");
            (response, body) = await user.PostAsync("/admin/documents/document/add/", form);
        }
        Assert.True(response.StatusCode == HttpStatusCode.Found, response.Describe(body));
        Assert.Equal("/admin/documents/document/", response.Location());

        (response, body) = await user.GetAsync("/admin/documents/document/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("was added successfully", body, StringComparison.Ordinal);
        Assert.Contains("Quarterly report", body, StringComparison.Ordinal);
        Assert.Contains($"<td class=\"field-size\">{UploadSize}</td>", body, StringComparison.Ordinal);
        var changeUrl = ChangeLinkRegex().Match(body);
        Assert.True(changeUrl.Success, body);

        // Edit it: a new title, the attachment kept.
        (response, body) = await user.GetAsync(changeUrl.Value);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var mediaUrl = MediaLinkRegex().Match(body);
        Assert.True(mediaUrl.Success, body);
        (response, body) = await user.PostAsync(changeUrl.Value, new MultipartFormDataContent
        {
            { new StringContent(CsrfToken(body)), "csrfmiddlewaretoken" },
            { new StringContent("Quarterly report (edited)"), "title" },
            { new StringContent("Edited through Osprey."), "notes" },
            { new StringContent("Save"), "_save" },
        });
        Assert.True(response.StatusCode == HttpStatusCode.Found, response.Describe(body));
        (response, body) = await user.GetAsync("/admin/documents/document/");
        Assert.Contains("Quarterly report (edited)", body, StringComparison.Ordinal);
        Assert.Contains("was changed successfully", body, StringComparison.Ordinal);

        // The upload comes back byte for byte (media served by the site's wsgi.py through wsgi.file_wrapper).
        using (var download = await user.Client.GetAsync(mediaUrl.Groups["url"].Value))
        {
            Assert.Equal(HttpStatusCode.OK, download.StatusCode);
            Assert.Equal("application/octet-stream", download.Content.Headers.ContentType?.MediaType);
            Assert.Equal(UploadSize, download.Content.Headers.ContentLength);
            var bytes = await download.Content.ReadAsByteArrayAsync();
            Assert.Equal(Examples.Sha256(payload), Examples.Sha256(bytes));
        }

        // The admin's CSS, collected by prepare.py, is served too.
        (response, body) = await user.GetAsync("/static/admin/css/base.css");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/css", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("DJANGO Admin styles", body, StringComparison.Ordinal);

        // Log out (Django 3.2: GET /admin/logout/); the admin is closed again.
        (response, body) = await user.GetAsync("/admin/logout/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Logged out", body, StringComparison.Ordinal);
        (response, _) = await user.GetAsync("/admin/");
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/admin/login/?next=/admin/", response.Location());

        Assert.DoesNotContain("Traceback", server.ErrorLog, StringComparison.Ordinal);
    }

    private static KeyValuePair<string, string>[] LoginFields(string token, string password) =>
    [
        new("csrfmiddlewaretoken", token), new("username", Examples.DjangoUser), new("password", password),
        new("next", "/admin/"),
    ];

    internal static string CsrfToken(string html)
    {
        var match = CsrfRegex().Match(html);
        Assert.True(match.Success, "no csrfmiddlewaretoken in the page:\n" + html);
        return match.Groups["token"].Value;
    }

    [GeneratedRegex("name=\"csrfmiddlewaretoken\" value=\"(?<token>[^\"]+)\"")]
    internal static partial Regex CsrfRegex();

    [GeneratedRegex(@"/admin/documents/document/\d+/change/")]
    private static partial Regex ChangeLinkRegex();

    [GeneratedRegex("href=\"(?<url>/media/documents/[^\"]+)\"")]
    private static partial Regex MediaLinkRegex();
}
