using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.RealApps;

/// <summary>What one step of a differential scenario expects to be compared, beyond the defaults.</summary>
public sealed record StepOptions
{
    /// <summary>
    /// The application failed (raised, returned a non-iterable...) before a response existed, so the response is the
    /// server's own error page: only the status code is compared (gunicorn's and Osprey's error pages differ by design).
    /// </summary>
    public bool ServerGenerated { get; init; }

    /// <summary>The file was written during the run: its mtime (ETag, Last-Modified) legitimately differs per server.</summary>
    public bool FileWrittenDuringRun { get; init; }

    /// <summary>
    /// The request carries its body together with <c>Expect: 100-continue</c>: RFC 9110 section 10.1.1 lets a server
    /// that already has the content omit the 100 (Continue), so the number of interim responses is not compared.
    /// </summary>
    public bool ContinueMayBeOmitted { get; init; }

    public TimeSpan? Timeout { get; init; }
}

/// <summary>One exchange reduced to what must be identical under gunicorn and under Osprey.</summary>
public sealed record Exchange(
    string Step,
    string Status,
    string Framing,
    IReadOnlyList<string> Headers,
    string Body,
    int InterimResponses)
{
    public override string ToString() =>
        $"{Step}\n  status: {Status}\n  framing: {Framing}\n  interim: {InterimResponses}\n"
        + string.Concat(Headers.Select(h => $"  {h}\n")) + $"  body: {Shorten(Body, 400)}";

    internal static string Shorten(string text, int max) => text.Length <= max ? text : text[..max] + $"...({text.Length} chars)";
}

/// <summary>
/// Sends a scenario's requests to one server over raw sockets (a fresh connection per request, so that connection
/// management cannot influence what is compared), keeps the cookies like a browser, and records each exchange
/// normalised. Normalisation removes exactly what legitimately differs between two runs or two servers:
/// <list type="bullet">
/// <item>Date and Server headers;</item>
/// <item>Connection and Keep-Alive headers: gunicorn's sync worker closes every connection ("Connection: close"),
/// Osprey keeps it alive; since each request has its own connection this changes nothing else;</item>
/// <item>per-run secrets: the values of the cookies named in <c>secretCookies</c> (CSRF token, session id, Flask's
/// signed session), CSRF tokens in HTML (<c>bodyRewrites</c>), and the Expires date of cookies (computed from the
/// clock at the time of the request; Max-Age is still compared; the 1970 date of a deletion is kept);</item>
/// <item>the HTTP version of the status line for HTTP/1.0 requests: gunicorn echoes "HTTP/1.0"; Osprey answers
/// "HTTP/1.1", which RFC 9110 section 2.5 asks of a server (send its highest conforming version); the framing is
/// still compared;</item>
/// <item>the body and headers of the server's own error page (<see cref="StepOptions.ServerGenerated"/>);</item>
/// <item>ETag and Last-Modified of files written during the run (<see cref="StepOptions.FileWrittenDuringRun"/>);</item>
/// <item>the clock: the Expires header (Django's never_cache sets it to "now");</item>
/// <item>the timestamp and signature of signed cookies (<c>signedCookies</c>: Django's messages, Flask's session),
/// whose payload is still compared;</item>
/// <item>the order of the methods in Allow (Flask builds it from a set, whose order changes with PYTHONHASHSEED).</item>
/// </list>
/// And one rule on framing (see <see cref="Compare"/>): where gunicorn 20.1 chunks (HTTP/1.1) or closes (HTTP/1.0)
/// and Osprey sends a Content-Length equal to the same complete body, both are right: PEP 3333 ("Handling the
/// Content-Length Header") lets a server that knows the whole body (a one-element list, an iterable exhausted before
/// its first non-empty chunk, a file_wrapper over a regular file) send a Content-Length.
/// Everything else is compared: status code and reason, body bytes, framing (Content-Length / chunked / until close,
/// complete or cut), every other header name and value (Content-Type, Content-Length, Transfer-Encoding, Location,
/// Set-Cookie with its attributes, Cache-Control, Vary, Content-Disposition...), the number of 100-continue responses.
/// </summary>
public sealed partial class DiffClient(
    int port,
    IReadOnlySet<string> secretCookies,
    IReadOnlyList<(Regex Pattern, string Replacement)> bodyRewrites,
    Func<string, string>? bodyNormalizer = null,
    IReadOnlyDictionary<string, Regex>? signedCookies = null)
{
    private readonly Dictionary<string, string> _cookies = new(StringComparer.Ordinal);

    public List<Exchange> Exchanges { get; } = [];

    public int Port => port;

    public async Task<RawHttpResponse> SendAsync(string step, string method, string target, IEnumerable<string>? headers = null,
        byte[]? body = null, string version = "HTTP/1.1", StepOptions? options = null)
    {
        options ??= new StepOptions();
        var allHeaders = headers?.ToList() ?? [];
        if (_cookies.Count > 0)
        {
            allHeaders.Add("Cookie: " + string.Join("; ", _cookies.Select(c => $"{c.Key}={c.Value}")));
        }
        var request = RawHttp.Request(method, target, port, allHeaders, body, version);
        using var connection = await RawHttpConnection.OpenAsync(port);
        await connection.SendAsync(request);
        var (interim, response) = await connection.ReadFinalResponseAsync(method == "HEAD", options.Timeout);
        foreach (var setCookie in response.HeaderValues("Set-Cookie"))
        {
            Remember(setCookie);
        }
        Exchanges.Add(Normalize($"{method} {target} {version}", version, response, interim.Count, options));
        return response;
    }

    public Task<RawHttpResponse> GetAsync(string step, string target, StepOptions? options = null) =>
        SendAsync(step, "GET", target, options: options);

    public async Task<RawHttpResponse> PostFormAsync(string target, IEnumerable<KeyValuePair<string, string>> fields)
    {
        var form = string.Join("&", fields.Select(f => Uri.EscapeDataString(f.Key) + "=" + Uri.EscapeDataString(f.Value)));
        return await SendAsync(target, "POST", target, ["Content-Type: application/x-www-form-urlencoded"], Encoding.UTF8.GetBytes(form));
    }

    public async Task<RawHttpResponse> PostMultipartAsync(string target, IEnumerable<KeyValuePair<string, string>> fields,
        string fileField, string fileName, byte[] file)
    {
        const string boundary = "----osprey-differential-boundary";
        var body = new MemoryStream();
        void Write(string s) => body.Write(Encoding.UTF8.GetBytes(s));
        foreach (var (name, value) in fields)
        {
            Write($"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
        }
        Write($"--{boundary}\r\nContent-Disposition: form-data; name=\"{fileField}\"; filename=\"{fileName}\"\r\n"
              + "Content-Type: application/octet-stream\r\n\r\n");
        body.Write(file);
        Write($"\r\n--{boundary}--\r\n");
        return await SendAsync(target, "POST", target, [$"Content-Type: multipart/form-data; boundary={boundary}"], body.ToArray(),
            options: new StepOptions { Timeout = TimeSpan.FromSeconds(60) });
    }

    private void Remember(string setCookie)
    {
        var parts = setCookie.Split(';');
        var eq = parts[0].IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0)
        {
            return;
        }
        var name = parts[0][..eq].Trim();
        var value = parts[0][(eq + 1)..].Trim();
        var deleted = parts.Skip(1).Any(a => a.Trim().Equals("Max-Age=0", StringComparison.OrdinalIgnoreCase)
                                              || a.Contains("1970", StringComparison.Ordinal));
        if (deleted || value.Length == 0)
        {
            _cookies.Remove(name);
        }
        else
        {
            _cookies[name] = value;
        }
    }

    private static readonly HashSet<string> Ignored = new(StringComparer.OrdinalIgnoreCase)
    {
        "Date", "Server", "Connection", "Keep-Alive",
    };

    private Exchange Normalize(string step, string requestVersion, RawHttpResponse response, int interim, StepOptions options)
    {
        if (options.ServerGenerated)
        {
            return new Exchange(step, response.StatusCode.ToString(CultureInfo.InvariantCulture) + " (server's error page)",
                "-", [], "-", interim);
        }
        var status = (requestVersion == "HTTP/1.1" ? response.Version + " " : "") + response.StatusCode + " " + response.Reason;
        var framing = $"{response.Framing}{(response.Complete ? "" : ", cut short")}";

        var rawBody = response.Body;
        var contentType = response.Header("Content-Type") ?? "";
        var textual = contentType.StartsWith("text/", StringComparison.Ordinal) || contentType.Contains("json", StringComparison.Ordinal)
                      || contentType.Contains("javascript", StringComparison.Ordinal)
                      || (contentType.Length == 0 && rawBody.Length < 4096 && !rawBody.Contains((byte)0) && IsUtf8(rawBody));
        string body;
        var lengthChanged = false;
        if (textual && rawBody.Length <= 256 * 1024)
        {
            var text = Encoding.UTF8.GetString(rawBody);
            var normalized = text;
            foreach (var (pattern, replacement) in bodyRewrites)
            {
                normalized = pattern.Replace(normalized, replacement);
            }
            if (bodyNormalizer is not null)
            {
                normalized = bodyNormalizer(normalized);
            }
            lengthChanged = normalized.Length != text.Length;
            body = normalized;
        }
        else
        {
            body = $"{rawBody.Length} bytes, sha256 {Convert.ToHexStringLower(SHA256.HashData(rawBody))}";
        }

        var headers = new List<string>();
        foreach (var (rawName, value) in response.Headers)
        {
            var name = rawName.ToLowerInvariant();
            if (Ignored.Contains(name))
            {
                continue;
            }
            var normalized = name switch
            {
                "set-cookie" => NormalizeCookie(value),
                "etag" or "last-modified" when options.FileWrittenDuringRun => "<mtime of a file written during the run>",
                // The body normalizer changed the body length (e.g. environ_app's JSON reduced to its portable keys);
                // the body itself is still compared, and the framing says whether a Content-Length was sent.
                "content-length" when lengthChanged => "<length of the body before normalisation>",
                "expires" => "<clock at the time of the request>",
                "allow" => string.Join(", ", value.Split(',').Select(m => m.Trim()).Order(StringComparer.Ordinal)),
                _ => value,
            };
            headers.Add($"{name}: {normalized}");
        }
        // Header order carries no meaning (RFC 9110 5.3) except among fields of the same name, whose order is kept.
        var ordered = headers.Select((h, i) => (h, i)).OrderBy(p => p.h[..p.h.IndexOf(':', StringComparison.Ordinal)], StringComparer.Ordinal)
            .ThenBy(p => p.i).Select(p => p.h).ToList();
        return new Exchange(step, status, framing, ordered, body, options.ContinueMayBeOmitted ? -1 : interim);
    }

    private static bool IsUtf8(byte[] bytes)
    {
        try
        {
            _ = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    private string NormalizeCookie(string value)
    {
        var parts = value.Split(';').Select(p => p.Trim()).ToList();
        var eq = parts[0].IndexOf('=', StringComparison.Ordinal);
        if (eq > 0)
        {
            var name = parts[0][..eq];
            var cookieValue = parts[0][(eq + 1)..];
            if (secretCookies.Contains(name) && cookieValue.Length > 0 && cookieValue != "\"\"")
            {
                parts[0] = name + "=<per-run secret>";
            }
            else if (signedCookies is not null && signedCookies.TryGetValue(name, out var signed)
                     && signed.Match(cookieValue) is { Success: true } m)
            {
                parts[0] = name + "=" + m.Groups["payload"].Value + "<timestamp and signature>";
            }
        }
        for (var i = 1; i < parts.Count; i++)
        {
            if (parts[i].StartsWith("expires=", StringComparison.OrdinalIgnoreCase) && !parts[i].Contains("1970", StringComparison.Ordinal))
            {
                parts[i] = parts[i][..8] + "<clock at the time of the request>";
            }
        }
        return string.Join("; ", parts);
    }

    /// <summary>Every difference between the oracle's exchanges and Osprey's, one line each (empty when identical).</summary>
    public static List<string> Compare(IReadOnlyList<Exchange> oracle, IReadOnlyList<Exchange> osprey)
    {
        var differences = new List<string>();
        if (oracle.Count != osprey.Count)
        {
            differences.Add($"gunicorn had {oracle.Count} exchanges, Osprey {osprey.Count}");
        }
        for (var i = 0; i < Math.Min(oracle.Count, osprey.Count); i++)
        {
            var (g, o) = (oracle[i], osprey[i]);
            if (g.Status != o.Status)
            {
                differences.Add($"{g.Step}: status gunicorn '{g.Status}' / Osprey '{o.Status}'");
            }
            var gHeaders = g.Headers;
            var oHeaders = o.Headers;
            // Osprey knew the whole body and sent its Content-Length where gunicorn chunked or closed: equivalent
            // when the bodies are identical and complete (PEP 3333 allows it; see the class comment).
            if (g.Framing is "Chunked" or "UntilClose" && o.Framing == "ContentLength" && g.Body == o.Body)
            {
                gHeaders = [.. gHeaders.Where(h => h != "transfer-encoding: chunked")];
                oHeaders = [.. oHeaders.Where(h => !h.StartsWith("content-length: ", StringComparison.Ordinal))];
            }
            else if (g.Framing != o.Framing)
            {
                differences.Add($"{g.Step}: framing gunicorn {g.Framing} / Osprey {o.Framing}");
            }
            if (g.InterimResponses != o.InterimResponses)
            {
                differences.Add($"{g.Step}: 1xx responses gunicorn {g.InterimResponses} / Osprey {o.InterimResponses}");
            }
            foreach (var h in gHeaders.Except(oHeaders))
            {
                differences.Add($"{g.Step}: header only under gunicorn: '{h}'");
            }
            foreach (var h in oHeaders.Except(gHeaders))
            {
                differences.Add($"{g.Step}: header only under Osprey: '{h}'");
            }
            if (g.Body != o.Body)
            {
                var at = 0;
                while (at < g.Body.Length && at < o.Body.Length && g.Body[at] == o.Body[at])
                {
                    at++;
                }
                var from = Math.Max(0, at - 60);
                differences.Add($"{g.Step}: body differs at char {at}: gunicorn '{Exchange.Shorten(g.Body[from..], 200)}' / Osprey '{Exchange.Shorten(o.Body[from..], 200)}'");
            }
        }
        return differences;
    }

    public static void AssertSame(IReadOnlyList<Exchange> oracle, IReadOnlyList<Exchange> osprey, string what)
    {
        var differences = Compare(oracle, osprey);
        if (differences.Count > 0)
        {
            Assert.Fail($"{what}: {differences.Count} difference(s) between gunicorn (the oracle) and Osprey:\n"
                        + string.Join("\n", differences.Select(d => "- " + d))
                        + "\n\n=== gunicorn ===\n" + string.Join("\n", oracle)
                        + "\n\n=== Osprey ===\n" + string.Join("\n", osprey));
        }
        Assert.NotEmpty(oracle);
    }
}
