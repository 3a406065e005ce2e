using System.Diagnostics;
using System.Text.Json;
using Osprey.Tests.Infrastructure;
using static Osprey.Tests.Integration.TestSupport;

namespace Osprey.Tests.Integration;

/// <summary>A venv made once for the class: <c>/usr/bin/python3 -m venv --system-site-packages --without-pip DIR</c>.</summary>
public sealed class VenvFixture : IAsyncLifetime
{
    public string Directory { get; private set; } = "";

    public string Python => Path.Combine(Directory, "bin", "python");

    public async Task InitializeAsync()
    {
        Directory = Path.Combine(Path.GetTempPath(), "osprey-venv-" + Guid.NewGuid().ToString("N")[..12]);
        var (exit, output) = await PythonFacts.RunAsync(RepoPaths.SystemPython,
            ["-m", "venv", "--system-site-packages", "--without-pip", Directory], null);
        if (exit != 0)
        {
            throw new InvalidOperationException($"creating the venv failed ({exit}): {output}");
        }
    }

    public Task DisposeAsync()
    {
        if (System.IO.Directory.Exists(Directory))
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        return Task.CompletedTask;
    }
}

/// <summary>What an interpreter says about itself when run directly.</summary>
internal static class PythonFacts
{
    private const string Script =
        "import sys, json; print(json.dumps({'executable': sys.executable, 'prefix': sys.prefix, " +
        "'base_prefix': sys.base_prefix, 'path': sys.path, 'version': sys.version}))";

    public static async Task<JsonElement> OfAsync(string python, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var (exit, output) = await RunAsync(python, ["-c", Script], environment);
        Assert.True(exit == 0, $"{python} -c ... failed: {output}");
        using var doc = JsonDocument.Parse(output);
        return doc.RootElement.Clone();
    }

    public static async Task<(int ExitCode, string Output)> RunAsync(string file, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = RepoPaths.Apps,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        psi.Environment.Remove("VIRTUAL_ENV");
        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null)
            {
                psi.Environment.Remove(key);
            }
            else
            {
                psi.Environment[key] = value;
            }
        }
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, process.ExitCode == 0 ? await stdout : await stdout + await stderr);
    }
}

/// <summary>
/// Which interpreter gets embedded: --python, the first python3 on PATH when no flag is given, a venv given with
/// --python, and $VIRTUAL_ENV without a flag. The app reports sys.executable / prefix / base_prefix / path.
/// </summary>
public sealed class PythonSelectionTests(VenvFixture venv) : IClassFixture<VenvFixture>
{
    private static async Task<JsonElement> ServedPythonAsync(OspreyServerOptions options)
    {
        await using var server = await OspreyServer.StartAsync(options);
        var response = await RawHttp.GetAsync(server, "/");
        Assert.True(response.StatusCode == 200, response.ToString());
        return response.Json().GetProperty("python");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Explicit_python_flag_is_used(string engine)
    {
        var served = await ServedPythonAsync(new OspreyServerOptions { Engine = engine, App = "environ_app:app", Python = RepoPaths.SystemPython });
        var itself = await PythonFacts.OfAsync(RepoPaths.SystemPython);

        Assert.Equal("/usr/bin/python3", served.GetProperty("executable").GetString());
        AssertSameInterpreter(itself, served);
        Assert.True(served.GetProperty("flask_importable").GetBoolean(), "Debian's python3-flask should be importable");
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Without_a_flag_the_first_python3_on_path_is_used(string engine)
    {
        // PATH is inherited: here its first python3 is a pyenv shim, which must lead to the real pyenv interpreter.
        var served = await ServedPythonAsync(new OspreyServerOptions { Engine = engine, App = "environ_app:app", Python = null });
        var itself = await PythonFacts.OfAsync("python3");

        AssertSameInterpreter(itself, served);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Venv_given_with_the_python_flag_is_used(string engine)
    {
        var served = await ServedPythonAsync(new OspreyServerOptions { Engine = engine, App = "environ_app:app", Python = venv.Python });
        AssertIsTheVenv(served);
    }

    [Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]
    public async Task Virtual_env_variable_selects_the_venv_without_a_flag(string engine)
    {
        var served = await ServedPythonAsync(new OspreyServerOptions
        {
            Engine = engine,
            App = "environ_app:app",
            Python = null,
            Environment = new Dictionary<string, string?> { ["VIRTUAL_ENV"] = venv.Directory },
        });
        AssertIsTheVenv(served);
    }

    private void AssertIsTheVenv(JsonElement served)
    {
        Assert.Equal(venv.Directory, served.GetProperty("prefix").GetString());
        Assert.Equal(venv.Python, served.GetProperty("executable").GetString());
        Assert.Equal("/usr", served.GetProperty("base_prefix").GetString());
        Assert.True(served.GetProperty("flask_importable").GetBoolean(),
            "flask comes from the system site-packages (--system-site-packages): " + served);
        Assert.Contains(Strings(served.GetProperty("path")), p => p.StartsWith(venv.Directory, StringComparison.Ordinal));
    }

    private static void AssertSameInterpreter(JsonElement itself, JsonElement served)
    {
        Assert.Equal(itself.GetProperty("version").GetString(), served.GetProperty("version").GetString());
        Assert.Equal(itself.GetProperty("prefix").GetString(), served.GetProperty("prefix").GetString());
        Assert.Equal(itself.GetProperty("base_prefix").GetString(), served.GetProperty("base_prefix").GetString());
        Assert.Equal(itself.GetProperty("executable").GetString(), served.GetProperty("executable").GetString());
        // Every library directory the interpreter has on its own is on the served sys.path too ('' is the cwd of -c).
        var servedPath = Strings(served.GetProperty("path"));
        foreach (var entry in Strings(itself.GetProperty("path")).Where(p => p.Length > 0 && p != RepoPaths.Apps))
        {
            Assert.True(servedPath.Contains(entry), $"'{entry}' missing from the served sys.path: {string.Join(", ", servedPath)}");
        }
    }
}
