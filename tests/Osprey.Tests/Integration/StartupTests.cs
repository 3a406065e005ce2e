using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>
/// The command line as a user meets it: --version, --help, every startup error (a non-zero exit and one clear
/// line, a Python traceback where there is one, never a .NET stack trace), and the APP forms
/// <c>module</c>, <c>module:factory()</c>, <c>module:factory('prod', n=2)</c>.
/// </summary>
public sealed class StartupTests
{
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(20);

    private static Task<ProcessResult> RunAsync(params string[] args) => OspreyServer.RunToCompletionAsync(args, RunTimeout);

    /// <summary>Runs the server with the usual flags and the given app/extra arguments (bind first, so they can override it).</summary>
    private static Task<ProcessResult> RunAppAsync(string engine, string app, params string[] extra) =>
        RunAsync([
            "-b", $"127.0.0.1:{OspreyServer.GetFreePort()}", "--python", RepoPaths.SystemPython,
            "--chdir", RepoPaths.Apps, "--engine", engine, .. extra, app,
        ]);

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Version_prints_the_version_and_exits_0(string engine)
    {
        var result = await RunAsync("--engine", engine, "--version");

        Assert.True(result.ExitCode == 0, result.ToString());
        var output = result.Stdout + result.Stderr;
        Assert.Contains("osprey", output, StringComparison.OrdinalIgnoreCase);
        Assert.Matches(@"\d+\.\d+\.\d+", output);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Help_prints_usage_and_exits_0(string engine)
    {
        var result = await RunAsync("--engine", engine, "--help");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("usage:", result.Stdout, StringComparison.Ordinal);
        Assert.Contains("--bind", result.Stdout, StringComparison.Ordinal);
        Assert.Contains("--threads", result.Stdout, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(result.Stdout + result.Stderr);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Module_not_found_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "no_such_module_xyz:app");
        AssertCleanFailure(result, allowTraceback: true, "no_such_module_xyz");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Import_error_shows_the_python_traceback(string engine)
    {
        var result = await RunAppAsync(engine, "broken_import:app");

        AssertCleanFailure(result, allowTraceback: true, "broken_import");
        Assert.Contains("Traceback (most recent call last):", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("RuntimeError: broken_import marker: this module fails at import", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("broken_import.py", result.Stderr, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Missing_attribute_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "no_app:app");
        AssertCleanFailure(result, allowTraceback: false, "no_app", "app");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Module_alone_without_application_attribute_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "no_app");
        AssertCleanFailure(result, allowTraceback: false, "no_app", "application");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Attribute_not_callable_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "not_callable:app");
        AssertCleanFailure(result, allowTraceback: false, "callable");
    }

    [Theory]
    [InlineData("--error-logfile")]
    [InlineData("--access-logfile")]
    public async Task Log_file_that_cannot_be_opened_is_one_clear_line(string option)
    {
        var path = Path.Combine(Path.GetTempPath(), "osprey-no-such-dir-" + Guid.NewGuid().ToString("N"), "x.log");
        var result = await RunAppAsync("osprey", "environ_app:app", option, path);
        AssertCleanFailure(result, allowTraceback: false, option, path);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Port_in_use_is_one_clear_line(string engine)
    {
        var occupier = new TcpListener(IPAddress.Loopback, 0);
        occupier.Start();
        try
        {
            var port = ((IPEndPoint)occupier.LocalEndpoint).Port;
            var result = await RunAsync("-b", $"127.0.0.1:{port}", "--python", RepoPaths.SystemPython,
                "--chdir", RepoPaths.Apps, "--engine", engine, "environ_app:app");
            AssertCleanFailure(result, allowTraceback: false, port.ToString(CultureInfo.InvariantCulture));
        }
        finally
        {
            occupier.Stop();
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Invalid_bind_address_is_one_clear_line(string engine)
    {
        var result = await RunAsync("-b", "999.1.1.1:80", "--python", RepoPaths.SystemPython,
            "--chdir", RepoPaths.Apps, "--engine", engine, "environ_app:app");
        AssertCleanFailure(result, allowTraceback: false, "999.1.1.1");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Port_out_of_range_is_one_clear_line(string engine)
    {
        var result = await RunAsync("-b", "127.0.0.1:99999", "--python", RepoPaths.SystemPython,
            "--chdir", RepoPaths.Apps, "--engine", engine, "environ_app:app");
        AssertCleanFailure(result, allowTraceback: false, "99999");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Python_that_is_not_an_interpreter_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "environ_app:app", "--python", "/bin/true");
        AssertCleanFailure(result, allowTraceback: false, "/bin/true");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Python_script_that_prints_nothing_is_one_clear_line(string engine)
    {
        var dir = Directory.CreateTempSubdirectory("osprey-fakepython-");
        try
        {
            var fake = Path.Combine(dir.FullName, "python3");
            await File.WriteAllTextAsync(fake, "#!/bin/sh\n# Looks like an interpreter, answers nothing.\nexit 0\n");
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            var result = await RunAppAsync(engine, "environ_app:app", "--python", fake);
            AssertCleanFailure(result, allowTraceback: false, fake);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Missing_python_is_one_clear_line(string engine)
    {
        var result = await RunAppAsync(engine, "environ_app:app", "--python", "/nonexistent/bin/python3");
        AssertCleanFailure(result, allowTraceback: false, "/nonexistent/bin/python3");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Module_alone_uses_its_application_attribute(string engine)
    {
        var made = await ServeFactoryAppAsync(engine, "factory_app");
        Assert.Equal("application", made.GetProperty("label").GetString());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Factory_call_without_arguments_is_called(string engine)
    {
        var made = await ServeFactoryAppAsync(engine, "factory_app:create_app()");

        Assert.Equal("create_app", made.GetProperty("label").GetString());
        Assert.Equal(0, made.GetProperty("args").GetArrayLength());
        Assert.Empty(made.GetProperty("kwargs").EnumerateObject());
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Factory_call_with_literal_arguments_is_called_with_them(string engine)
    {
        var made = await ServeFactoryAppAsync(engine, "factory_app:create_app('prod', n=2)");

        Assert.Equal("create_app", made.GetProperty("label").GetString());
        Assert.Equal(["prod"], Strings(made.GetProperty("args")));
        Assert.Equal(2, made.GetProperty("kwargs").GetProperty("n").GetInt32());
        Assert.Single(made.GetProperty("kwargs").EnumerateObject());
    }

    [Fact]
    public async Task Factory_arguments_that_are_not_literals_are_one_line_and_exit_4_as_in_gunicorn()
    {
        var result = await RunAppAsync("osprey", "factory_app:create_app(os.getcwd())");

        Assert.True(result.ExitCode == 4, result.ToString());
        AssertCleanFailure(result, allowTraceback: false, "Failed to parse arguments as literal values: 'create_app(os.getcwd())'");
    }

    [Fact]
    public async Task A_bind_descriptor_that_is_not_open_is_named_so()
    {
        var result = await RunAppAsync("osprey", "environ_app:app", "-b", "fd://987");

        Assert.Equal(1, result.ExitCode);
        AssertCleanFailure(result, allowTraceback: false, "fd://987", "not an open file descriptor");
    }

    [Fact]
    public async Task An_interpreter_that_fails_with_several_lines_is_quoted_whole()
    {
        var dir = Directory.CreateTempSubdirectory("osprey-shim-");
        try
        {
            // What a pyenv shim says for a version that is installed but not selected.
            var shim = Path.Combine(dir.FullName, "python3.8");
            await File.WriteAllTextAsync(shim, """
                #!/bin/sh
                echo "pyenv: python3.8: command not found" >&2
                echo >&2
                echo "The \`python3.8' command exists in these Python versions:" >&2
                echo "  3.8.18" >&2
                echo >&2
                echo "Note: See 'pyenv help global' for tips on allowing multiple" >&2
                echo "      Python versions to be found at the same time." >&2
                exit 127

                """);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            var result = await RunAppAsync("osprey", "environ_app:app", "--python", shim);

            Assert.Equal(1, result.ExitCode);
            AssertCleanFailure(result, allowTraceback: false, "pyenv: python3.8: command not found",
                "command exists in these Python versions: 3.8.18", "to be found at the same time.");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>Runs osprey through sh with <paramref name="redirection"/> (say <c>2&gt;&amp;-</c>) applied to it.</summary>
    private static Task<ProcessResult> RunRedirectedAsync(string redirection, params string[] args) =>
        OspreyServer.RunToCompletionAsync(["-c", $"exec \"$0\" \"$@\" {redirection}", RepoPaths.OspreyExecutable, .. args],
            RunTimeout, executable: "/bin/sh");

    [Fact]
    public async Task A_usage_error_with_stderr_closed_still_exits_2()
    {
        var result = await RunRedirectedAsync("2>&-", "-w", "abc", "environ_app:app");

        Assert.True(result.ExitCode == 2, result.ToString());
    }

    [Fact]
    public async Task Version_with_stdout_closed_exits_0()
    {
        var result = await RunRedirectedAsync(">&-", "--version");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Stderr);
    }

    [Fact]
    public async Task Check_config_loads_the_application_and_exits_0_without_binding()
    {
        // The port is taken: --check-config must not try to bind it.
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;

        var result = await RunAsync("--check-config", "-b", $"127.0.0.1:{port}", "--python", RepoPaths.SystemPython,
            "--chdir", RepoPaths.Apps, "environ_app:app");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("Listening", result.Stderr, StringComparison.Ordinal);
        AssertNoDotNetStackTrace(result.Stderr);
    }

    [Theory]
    [InlineData("broken_import:app", true, "Failed to load application")]
    [InlineData("no_such_module_xyz:app", false, "no_such_module_xyz")]
    public async Task Check_config_of_an_application_that_does_not_load_exits_1(string app, bool traceback, string mentions)
    {
        var result = await RunAsync("--check-config", "--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps, app);

        Assert.Equal(1, result.ExitCode);
        AssertCleanFailure(result, allowTraceback: traceback, mentions);
        Assert.Equal(traceback, result.Stderr.Contains("Traceback (most recent call last):", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("missing-cert", "--certfile", "does not exist")]
    [InlineData("missing-key", "--keyfile", "does not exist")]
    [InlineData("not-pem", "--certfile", "no PEM certificate")]
    [InlineData("no-key", "--certfile", "no PEM private key")]
    [InlineData("wrong-key", "--keyfile", "does not match")]
    [InlineData("encrypted-key", "--keyfile", "encrypted")]
    [InlineData("ca-not-pem", "--ca-certs", "no PEM certificate")]
    [InlineData("missing-ca", "--ca-certs", "does not exist")]
    [InlineData("ed25519", "--certfile", "key of type Ed25519, which is not supported; use an RSA or ECDSA")]
    [InlineData("damaged-cert", "--certfile", "holds a PEM certificate that cannot be read")]
    [InlineData("damaged-ca", "--ca-certs", "holds a PEM certificate that cannot be read")]
    public async Task A_certificate_that_cannot_be_served_is_one_clear_line(string problem, string option, string words)
    {
        var dir = Directory.CreateTempSubdirectory("osprey-badtls-").FullName;
        try
        {
            using var key = System.Security.Cryptography.ECDsa.Create();
            using var otherKey = System.Security.Cryptography.ECDsa.Create();
            var request = new System.Security.Cryptography.X509Certificates.CertificateRequest(
                "CN=bad", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
            using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            var cert = Path.Combine(dir, "site.crt");
            var keyFile = Path.Combine(dir, "site.key");
            // A base64 line damaged inside an otherwise well-formed block, markers intact.
            string pem = certificate.ExportCertificatePem();
            string damaged = pem.Insert(pem.IndexOf('\n', StringComparison.Ordinal) + 1, "!!!!");
            File.WriteAllText(cert, problem switch
            {
                "not-pem" => "just text\n",
                "damaged-cert" => damaged,
                _ => certificate.ExportCertificatePem(),
            });
            File.WriteAllText(keyFile, problem switch
            {
                "wrong-key" => otherKey.ExportPkcs8PrivateKeyPem(),
                "encrypted-key" => key.ExportEncryptedPkcs8PrivateKeyPem("secret", new System.Security.Cryptography.PbeParameters(
                    System.Security.Cryptography.PbeEncryptionAlgorithm.Aes256Cbc, System.Security.Cryptography.HashAlgorithmName.SHA256, 1000)),
                _ => key.ExportPkcs8PrivateKeyPem(),
            });
            if (problem == "ed25519")
            {
                // .NET cannot make an Ed25519 certificate; OpenSSL (which gunicorn would serve it with) can.
                await RunOpenSslAsync("req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", keyFile, "-out", cert,
                    "-subj", "/CN=ed", "-days", "1");
            }
            if (problem == "damaged-ca")
            {
                File.WriteAllText(Path.Combine(dir, "ca.pem"), certificate.ExportCertificatePem() + damaged);
            }
            string[] files = problem switch
            {
                "damaged-ca" => ["--certfile", cert, "--keyfile", keyFile, "--ca-certs", Path.Combine(dir, "ca.pem"), "--cert-reqs", "2"],
                "missing-cert" => ["--certfile", Path.Combine(dir, "absent.crt"), "--keyfile", keyFile],
                "missing-key" => ["--certfile", cert, "--keyfile", Path.Combine(dir, "absent.key")],
                "no-key" => ["--certfile", cert],
                "ca-not-pem" => ["--certfile", cert, "--keyfile", keyFile, "--ca-certs", keyFile, "--cert-reqs", "2"],
                "missing-ca" => ["--certfile", cert, "--keyfile", keyFile, "--ca-certs", Path.Combine(dir, "absent-ca.pem"), "--cert-reqs", "1"],
                _ => ["--certfile", cert, "--keyfile", keyFile],
            };

            var result = await RunAppAsync("kestrel", "environ_app:app", files);

            Assert.Equal(1, result.ExitCode);
            AssertCleanFailure(result, allowTraceback: false, option, words);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task RunOpenSslAsync(params string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo("openssl") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        string errors = await process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"openssl {string.Join(' ', args)}: {errors}");
    }

    private static async Task<JsonElement> ServeFactoryAppAsync(string engine, string app)
    {
        await using var server = await OspreyServer.StartAsync(engine, app);
        var response = await RawHttp.GetAsync(server, "/");
        Assert.True(response.StatusCode == 200, response.ToString());
        return response.Json();
    }

    /// <summary>
    /// Non-zero exit, no .NET stack trace, and, apart from INFO/DEBUG log lines, an argparse-style "usage:" line and
    /// (when allowed) a Python traceback, exactly one line on stderr, which names every one of <paramref name="mentions"/>.
    /// </summary>
    private static void AssertCleanFailure(ProcessResult result, bool allowTraceback, params string[] mentions)
    {
        Assert.True(result.ExitCode != 0, "expected a non-zero exit: " + result);
        AssertNoDotNetStackTrace(result.Stdout + result.Stderr);

        var lines = WithoutTracebacks(result.Stderr.Split('\n'), out var hadTraceback)
            .Where(l => l.Trim().Length > 0)
            .Where(l => !(LogLineRegex().Match(l) is { Success: true } m && m.Groups["level"].Value is "INFO" or "DEBUG"))
            // Command-line errors may follow the argparse/gunicorn convention of a "usage:" reminder before the error.
            .Where(l => !l.StartsWith("usage: ", StringComparison.Ordinal))
            .ToList();
        if (!allowTraceback)
        {
            Assert.False(hadTraceback, "no Python traceback expected here: " + result);
        }
        Assert.True(lines.Count == 1, $"expected exactly one error line, got {lines.Count}: {result}");
        foreach (var mention in mentions)
        {
            Assert.True(lines[0].Contains(mention, StringComparison.Ordinal), $"the error line should name '{mention}': {lines[0]}");
        }
    }

    /// <summary>Drops Python traceback blocks ("Traceback ..." up to and including the exception line).</summary>
    private static IEnumerable<string> WithoutTracebacks(IEnumerable<string> lines, out bool hadTraceback)
    {
        var kept = new List<string>();
        var inTraceback = false;
        hadTraceback = false;
        foreach (var line in lines)
        {
            if (line.StartsWith("Traceback (most recent call last):", StringComparison.Ordinal))
            {
                inTraceback = true;
                hadTraceback = true;
                continue;
            }
            if (line.StartsWith("During handling of the above exception", StringComparison.Ordinal)
                || line.StartsWith("The above exception was the direct cause", StringComparison.Ordinal))
            {
                continue;
            }
            if (inTraceback)
            {
                if (!line.StartsWith(' '))
                {
                    inTraceback = false; // the exception line ends the block
                }
                continue;
            }
            kept.Add(line);
        }
        return kept;
    }
}
