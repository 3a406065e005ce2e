using System.Net;
using System.Text.Json;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>
/// A real browser: headless Chromium logs into the Django admin served by Osprey and opens the change list. The page
/// content is asserted through the DOM, and a screenshot is kept in tests/artifacts/real-apps/.
/// </summary>
public sealed class BrowserTests
{
    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Chromium_logs_into_the_Django_admin_and_opens_the_change_list(string engine)
    {
        using var data = await Examples.PrepareDjangoAsync();
        await using var server = await Examples.StartOspreyAsync(engine, Examples.DjangoDir, Examples.DjangoApp,
            Examples.DjangoEnvironment(data.Path));
        await CreateDocumentAsync(server, "Field notes on ospreys");
        var site = $"http://127.0.0.1:{server.Port}";

        await using var browser = await Chromium.LaunchAsync();

        // The admin sends the browser to its login page.
        await browser.NavigateAsync($"{site}/admin/", $"{site}/admin/login/");
        Assert.Equal("Log in | Django site admin", await browser.EvaluateStringAsync("document.title"));

        // Fill in the form and press the button, as a user would; Django checks the CSRF token the form carries.
        await browser.EvaluateAsync($$"""
            (() => {
              document.querySelector('#id_username').value = {{JsonSerializer.Serialize(Examples.DjangoUser)}};
              document.querySelector('#id_password').value = {{JsonSerializer.Serialize(Examples.DjangoPassword)}};
              document.querySelector('#login-form input[type=submit]').click();
            })()
            """);
        await browser.WaitForAsync($"location.href === '{site}/admin/' && document.readyState === 'complete'", TimeSpan.FromSeconds(20));
        Assert.Equal("Site administration | Django site admin", await browser.EvaluateStringAsync("document.title"));
        Assert.Contains("Documents", await browser.EvaluateStringAsync("document.querySelector('#content-main').innerText"), StringComparison.Ordinal);

        // The change list.
        await browser.NavigateAsync($"{site}/admin/documents/document/");
        Assert.Equal("Select document to change | Django site admin", await browser.EvaluateStringAsync("document.title"));
        var rows = await browser.EvaluateStringAsync("document.querySelector('#result_list tbody').innerText");
        Assert.Contains("Field notes on ospreys", rows, StringComparison.Ordinal);
        Assert.Contains("documents/notes.txt", rows, StringComparison.Ordinal);
        Assert.Contains("1 document", await browser.EvaluateStringAsync("document.querySelector('.paginator').innerText"), StringComparison.Ordinal);

        // The admin's stylesheets came through Osprey and apply: Django 3.2's header colour is #417690.
        await browser.WaitForAsync("[...document.styleSheets].length >= 3", TimeSpan.FromSeconds(10));
        Assert.True((await browser.EvaluateAsync(
            "[...document.styleSheets].filter(s => s.href).every(s => s.cssRules.length > 0)")).GetBoolean());
        Assert.Equal("rgb(65, 118, 144)", await browser.EvaluateStringAsync("getComputedStyle(document.querySelector('#header')).backgroundColor"));
        var failed = await browser.EvaluateAsync(
            "performance.getEntriesByType('resource').filter(r => r.responseStatus >= 400).map(r => r.name)");
        Assert.Equal(0, failed.GetArrayLength());

        var png = await browser.ScreenshotAsync();
        Assert.True(png.Length > 10_000 && png[0] == 0x89 && png[1] == (byte)'P', $"not a real screenshot ({png.Length} bytes)");
        var path = Path.Combine(Examples.ArtifactsDir, $"django-admin-change-list-{engine}.png");
        await File.WriteAllBytesAsync(path, png);
    }

    /// <summary>Creates one document through the admin over HTTP, so that the change list has a row to show.</summary>
    private static async Task CreateDocumentAsync(OspreyServer server, string title)
    {
        using var user = new Browserless(server.BaseAddress);
        var (response, body) = await user.GetAsync("/admin/login/?next=/admin/");
        (response, body) = await user.PostFormAsync("/admin/login/?next=/admin/",
        [
            new("csrfmiddlewaretoken", DjangoAdminTests.CsrfToken(body)), new("username", Examples.DjangoUser),
            new("password", Examples.DjangoPassword), new("next", "/admin/"),
        ]);
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        (_, body) = await user.GetAsync("/admin/documents/document/add/");
        using var form = new MultipartFormDataContent
        {
            { new StringContent(DjangoAdminTests.CsrfToken(body)), "csrfmiddlewaretoken" },
            { new StringContent(title), "title" },
            { new ByteArrayContent("Ospreys eat fish.\n"u8.ToArray()), "attachment", "notes.txt" },
            { new StringContent("Save"), "_save" },
        };
        (response, body) = await user.PostAsync("/admin/documents/document/add/", form);
        Assert.True(response.StatusCode == HttpStatusCode.Found, response.Describe(body));
    }
}
