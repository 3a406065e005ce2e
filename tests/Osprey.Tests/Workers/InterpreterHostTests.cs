using System.Text.Json;
using Osprey.Tests.Infrastructure;
using Xunit.Abstractions;
using static Osprey.Tests.Workers.ProcessTools;

namespace Osprey.Tests.Workers;

/// <summary>
/// Where a worker runs: inside the interpreter's own executable by default (Debian's static
/// <c>python3</c>, no libpython mapped), as an osprey process embedding libpython with
/// OSPREY_EMBED=1, and in either case the application finds the same Python and nothing of the
/// machinery (hidden variables, the bootstrap's names, the <c>-c</c> entry on sys.path).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class InterpreterHostTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    // A hook makes the master hand the configuration and its hooks to workers in hidden variables.
    private const string Config = "workers = 1\ndef post_fork(server, worker):\n    pass\n";

    [Fact]
    public async Task Workers_run_inside_the_interpreter_executable_and_the_application_sees_none_of_it()
    {
        using var dir = TempDir.Create("osprey-host-");
        string config = dir.Write("osprey.conf.py", Config);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "process_app:app", Args = ["-c", config] });
        JsonElement process = await DescribeAsync(server);
        output.WriteLine(process.ToString());

        Assert.Equal(Resolve(RepoPaths.SystemPython), process.GetProperty("exe").GetString());
        Assert.Empty(process.GetProperty("libpython").EnumerateArray());
        AssertNothingOfOspreyShows(process);
        Assert.Contains($"at {RepoPaths.SystemPython} (workers run inside it)", server.ErrorLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OSPREY_EMBED_keeps_workers_in_osprey_processes_that_embed_libpython_with_the_same_sys_path()
    {
        using var dir = TempDir.Create("osprey-host-");
        string config = dir.Write("osprey.conf.py", Config);
        await using var hosted = await OspreyServer.StartAsync(new OspreyServerOptions { App = "process_app:app", Args = ["-c", config] });
        await using var embedded = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "process_app:app",
            Args = ["-c", config],
            Environment = new Dictionary<string, string?> { ["OSPREY_EMBED"] = "1" },
        });
        JsonElement inside = await DescribeAsync(hosted);
        JsonElement embedding = await DescribeAsync(embedded);
        output.WriteLine(embedding.ToString());

        Assert.Equal(Resolve(RepoPaths.OspreyExecutable), embedding.GetProperty("exe").GetString());
        Assert.Contains(embedding.GetProperty("libpython").EnumerateArray(), lib => lib.GetString()!.Contains("libpython3", StringComparison.Ordinal));
        AssertNothingOfOspreyShows(embedding);
        Assert.Equal(inside.GetProperty("path").ToString(), embedding.GetProperty("path").ToString());
        Assert.Equal(inside.GetProperty("argv").ToString().Replace($":{hosted.Port}\"", ":PORT\"", StringComparison.Ordinal),
            embedding.GetProperty("argv").ToString().Replace($":{embedded.Port}\"", ":PORT\"", StringComparison.Ordinal));
        Assert.Equal(inside.GetProperty("executable").GetString(), embedding.GetProperty("executable").GetString());
    }

    [Fact]
    public async Task INT_to_a_worker_inside_the_interpreter_ends_it_as_gunicorn_does_not_with_KeyboardInterrupt()
    {
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "process_app:app" });
        int worker = (await DescribeAsync(server)).GetProperty("pid").GetInt32();

        Signal(worker, 2 /* SIGINT */);

        await server.WaitForLogAsync($"Worker exiting (pid: {worker}) on INT", Eventually);
        int replacement = (await WaitForChildrenAsync(server.ProcessId, 1, Eventually))[0];
        Assert.NotEqual(worker, replacement);
        Assert.DoesNotContain("KeyboardInterrupt", server.ErrorLog, StringComparison.Ordinal);
    }

    // Imported by --check-config: says where, and whether the check's hand-over variable shows.
    private const string WhereApp = """
        import os, sys
        shown = sorted(name for name in os.environ if name.startswith('OSPREY_CHECK'))
        sys.stderr.write('imported in %s seeing %s\n' % (os.readlink('/proc/self/exe'), shown))
        def app(environ, start_response):
            return []
        """;

    [Fact]
    public async Task Check_config_imports_the_application_inside_the_interpreter_as_a_worker_would()
    {
        using var dir = TempDir.Create("osprey-check-");
        dir.Write("where_app.py", WhereApp);
        string[] args = ["--check-config", "--python", RepoPaths.SystemPython, "--chdir", dir.Path, "where_app:app"];

        ProcessResult inside = await OspreyServer.RunToCompletionAsync(args, Eventually);
        ProcessResult embedded = await OspreyServer.RunToCompletionAsync(args, Eventually,
            new Dictionary<string, string?> { ["OSPREY_EMBED"] = "1" });

        Assert.True(inside.ExitCode == 0, inside.ToString());
        Assert.Contains($"imported in {Resolve(RepoPaths.SystemPython)} seeing []", inside.Stderr, StringComparison.Ordinal);
        Assert.True(embedded.ExitCode == 0, embedded.ToString());
        Assert.Contains($"imported in {Resolve(RepoPaths.OspreyExecutable)} seeing []", embedded.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_host_library_that_cannot_be_loaded_falls_back_to_embedding()
    {
        string build = Path.GetDirectoryName(RepoPaths.OspreyExecutable)!;
        if (!File.Exists(Path.Combine(build, "osprey.so")))
        {
            // The JIT build hosts through the .NET host that started the master, which loads the same
            // files as the executable: no layout breaks one and not the other. The Native AOT pass runs this.
            output.WriteLine($"{build} has no osprey.so (not the Native AOT build): nothing to break");
            return;
        }
        using var dir = TempDir.Create("osprey-fallback-");
        string executable = Path.Combine(dir.Path, "osprey");
        File.Copy(RepoPaths.OspreyExecutable, executable);
        File.SetUnixFileMode(executable, File.GetUnixFileMode(RepoPaths.OspreyExecutable));
        File.WriteAllText(Path.Combine(dir.Path, "osprey.so"), "not a shared library\n");

        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions { App = "process_app:app", Executable = executable });
        JsonElement process = await DescribeAsync(server);

        Assert.Equal(executable, process.GetProperty("exe").GetString());
        Assert.NotEmpty(process.GetProperty("libpython").EnumerateArray());
        AssertNothingOfOspreyShows(process);
        Assert.Contains($"osprey: cannot run the worker inside {RepoPaths.SystemPython} (", server.ErrorLog, StringComparison.Ordinal);
        Assert.Contains("it embeds libpython instead", server.ErrorLog, StringComparison.Ordinal);

        // --check-config falls back the same way, once.
        dir.Write("where_app.py", WhereApp);
        ProcessResult check = await OspreyServer.RunToCompletionAsync(
            ["--check-config", "--python", RepoPaths.SystemPython, "--chdir", dir.Path, "where_app:app"], Eventually, executable: executable);
        Assert.True(check.ExitCode == 0, check.ToString());
        Assert.Contains($"imported in {executable} seeing []", check.Stderr, StringComparison.Ordinal);
        Assert.Single(check.Stderr.Split('\n'), line => line.Contains("it embeds libpython instead", StringComparison.Ordinal));
    }

    private static void AssertNothingOfOspreyShows(JsonElement process)
    {
        Assert.Empty(process.GetProperty("main").EnumerateArray());
        Assert.DoesNotContain(process.GetProperty("environ").EnumerateArray(),
            name => name.GetString() is "OSPREY_WORKER" or "OSPREY_CONFIG_ARGUMENTS" or "OSPREY_CONFIG_HOOKS" or "OSPREY_DAEMON_WORKER");
        Assert.DoesNotContain(process.GetProperty("path").EnumerateArray(), entry => entry.GetString() == "");
        Assert.Equal("osprey", process.GetProperty("argv")[0].GetString());
    }

    private static async Task<JsonElement> DescribeAsync(OspreyServer server)
    {
        using var client = NewClient();
        string body = await client.GetStringAsync(server.BaseAddress);
        using var document = JsonDocument.Parse(body);
        return document.RootElement.Clone();
    }

    private static string Resolve(string path) => new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);
}
