using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Osprey.Cli;
using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Cli;

/// <summary>
/// gunicorn's master changes to <c>--chdir</c> before it binds, writes the pid file and opens the
/// logs, so relative paths there mean paths in that directory, wherever the option comes on the
/// command line or in the configuration file. The configuration file itself is read from where the
/// command was started.
/// </summary>
public sealed class ChdirPathsTests : IDisposable
{
    private static readonly TimeSpan Eventually = TimeSpan.FromSeconds(30);

    private readonly TempDir _dir = TempDir.Create("osprey-chdirpaths-");

    public void Dispose() => _dir.Dispose();

    private static ParseOutcome Parse(IReadOnlyList<string> args, ConfigArguments? config = null) =>
        CommandLine.Parse(args, _ => [IPAddress.Loopback], config: config);

    private static OspreyOptions Ok(IReadOnlyList<string> args, ConfigArguments? config = null)
    {
        ParseOutcome outcome = Parse(args, config);
        Assert.False(outcome is ParseOutcome.Error, (outcome as ParseOutcome.Error)?.Message);
        return Assert.IsType<ParseOutcome.Run>(outcome).Options;
    }

    [Fact]
    public void Relative_paths_mean_paths_in_the_chdir_directory_wherever_chdir_is_given()
    {
        string site = _dir.Path;
        Directory.CreateDirectory(Path.Combine(site, "heartbeats"));

        OspreyOptions o = Ok([
            "--pid", "run/x.pid", "--error-logfile", "e.log", "--access-logfile", "a.log", "-b", "unix:rel.sock",
            "--worker-tmp-dir", "heartbeats", "--statsd-host", "unix:stats.sock", "--certfile", "site.crt", "--keyfile", "site.key",
            "--ca-certs", "ca.pem", "--reload-extra-file", "templates/t.html", "--chdir", site, "app:app",
        ]);

        Assert.Equal(Path.Combine(site, "run/x.pid"), o.PidFile);
        Assert.Equal(Path.Combine(site, "e.log"), o.ErrorLog);
        Assert.Equal(Path.Combine(site, "a.log"), o.AccessLog);
        var unix = Assert.IsType<BindAddress.Unix>(Assert.Single(o.Binds));
        Assert.Equal(Path.Combine(site, "rel.sock"), unix.Path);
        Assert.Equal("unix:rel.sock", unix.Original);
        Assert.Equal(Path.Combine(site, "heartbeats"), o.WorkerTmpDir);
        Assert.Equal("unix:" + Path.Combine(site, "stats.sock"), o.StatsdHost);
        Assert.Equal(Path.Combine(site, "site.crt"), o.CertFile);
        Assert.Equal(Path.Combine(site, "site.key"), o.KeyFile);
        Assert.Equal(Path.Combine(site, "ca.pem"), o.CaCerts);
        Assert.Equal([Path.Combine(site, "templates/t.html")], o.ReloadExtraFiles);
        var error = Assert.IsType<ParseOutcome.Error>(Parse(["--chdir", site, "--worker-tmp-dir", "absent", "app:app"]));
        Assert.Equal("--worker-tmp-dir: directory 'absent' does not exist", error.Message);
    }

    [Fact]
    public void Paths_and_chdir_from_the_configuration_file_resolve_the_same_way()
    {
        string site = _dir.Path;
        var config = new ConfigArguments("gunicorn.conf.py", ["--pid=x.pid", "--error-logfile=-", "--chdir=" + site], []);

        OspreyOptions o = Ok(["--access-logfile", "a.log", "app:app"], config);

        Assert.Equal(Path.Combine(site, "x.pid"), o.PidFile);
        Assert.Equal(Path.Combine(site, "a.log"), o.AccessLog);
        // "-" is stderr (and stdout for the access log), not a file.
        Assert.Equal("-", o.ErrorLog);
        Assert.Equal("-", Ok(["--chdir", site, "--access-logfile", "-", "app:app"]).AccessLog);
    }

    [Fact]
    public void Without_chdir_relative_paths_are_in_the_current_directory()
    {
        OspreyOptions o = Ok(["--pid", "x.pid", "--error-logfile", "e.log", "-b", "unix:rel.sock", "app:app"]);

        Assert.Equal(Path.GetFullPath("x.pid"), o.PidFile);
        Assert.Equal(Path.GetFullPath("e.log"), o.ErrorLog);
        Assert.Equal(Path.GetFullPath("rel.sock"), Assert.IsType<BindAddress.Unix>(Assert.Single(o.Binds)).Path);
    }

    /// <summary>The directory the command is started from, which holds nothing the server writes.</summary>
    private string StartDirectory()
    {
        string start = Path.Combine(_dir.Path, "start");
        Directory.CreateDirectory(start);
        return start;
    }

    [Fact]
    public async Task The_server_writes_its_pid_file_logs_and_socket_in_the_chdir_directory()
    {
        string start = StartDirectory();
        string site = Path.Combine(_dir.Path, "site");
        Directory.CreateDirectory(site);

        var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "environ_app:app",
            Chdir = site,
            WorkingDirectory = start,
            Args = ["--pythonpath", RepoPaths.Apps, "--pid", "x.pid", "--error-logfile", "e.log", "--access-logfile", "a.log", "-b", "unix:rel.sock"],
        });
        try
        {
            var response = await RawHttp.GetAsync(server, "/");
            Assert.True(response.StatusCode == 200, response.ToString());
            using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                await client.ConnectAsync(new UnixDomainSocketEndPoint(Path.Combine(site, "rel.sock")));
            }

            Assert.Equal(server.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadAllText(Path.Combine(site, "x.pid")).Trim());
            Assert.Contains("Listening at:", File.ReadAllText(Path.Combine(site, "e.log")), StringComparison.Ordinal);
            await WaitForTextAsync(Path.Combine(site, "a.log"), "\"GET / HTTP/1.1\" 200");
            Assert.Empty(Directory.GetFileSystemEntries(start));
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    private static async Task WaitForTextAsync(string path, string text)
    {
        var deadline = DateTime.UtcNow + Eventually;
        while (!(File.Exists(path) && File.ReadAllText(path).Contains(text, StringComparison.Ordinal)))
        {
            Assert.True(DateTime.UtcNow < deadline, $"'{text}' never appeared in {path}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task Print_config_shows_the_paths_as_the_server_will_use_them()
    {
        string start = StartDirectory();
        string site = Path.Combine(_dir.Path, "site");
        Directory.CreateDirectory(site);
        // Read from the start directory, before the change to --chdir, as gunicorn reads -c.
        File.WriteAllText(Path.Combine(start, "site.conf.py"), "pidfile = 'x.pid'\n");

        ProcessResult result = await OspreyServer.RunToCompletionAsync(
            ["--print-config", "--python", RepoPaths.SystemPython, "--chdir", site, "--pythonpath", RepoPaths.Apps,
                "-c", "site.conf.py", "--error-logfile", "e.log", "-b", "unix:rel.sock", "environ_app:app"],
            Eventually, workingDirectory: start);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches($@"(?m)^pidfile\s+= '{Regex.Escape(Path.Combine(site, "x.pid"))}'$", result.Stdout);
        Assert.Matches($@"(?m)^errorlog\s+= '{Regex.Escape(Path.Combine(site, "e.log"))}'$", result.Stdout);
        Assert.Matches($@"(?m)^bind\s+= \['unix:{Regex.Escape(Path.Combine(site, "rel.sock"))}'\]$", result.Stdout);
        Assert.Matches(@"(?m)^config\s+= 'site\.conf\.py'$", result.Stdout);
    }
}
