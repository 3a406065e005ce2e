using System.Net;
using Osprey.Cli;
using Osprey.Tests.Infrastructure;
using Osprey.Tests.Integration;

namespace Osprey.Tests.Cli;

/// <summary>
/// Spellings and values a gunicorn command line uses that Osprey must take as gunicorn does:
/// <c>--bind :$PORT</c> (Cloud Run's samples, many Dockerfiles) and very large durations.
/// </summary>
public sealed class GunicornFormsTests
{
    private static ParseOutcome Parse(params string[] args) => CommandLine.Parse(args, _ => [IPAddress.Loopback]);

    private static OspreyOptions Ok(params string[] args) => Assert.IsType<ParseOutcome.Run>(Parse(args)).Options;

    [Theory]
    [InlineData(":9301", 9301)]
    [InlineData("tcp://:8080", 8080)]
    [InlineData(":0", 0)]
    public void Bind_with_only_a_port_is_every_ipv4_interface(string bind, int port)
    {
        var tcp = Assert.IsType<BindAddress.Tcp>(Assert.Single(Ok("-b", bind, "app").Binds));

        Assert.Equal(IPAddress.Any, tcp.Address);
        Assert.Equal(port, tcp.Port);
        Assert.Equal(bind, tcp.Original);
    }

    [Fact]
    public void Bind_with_only_a_port_works_in_gunicorn_cmd_args_too()
    {
        var outcome = CommandLine.Parse(["app"], _ => [IPAddress.Loopback],
            name => name == CommandLine.CommandArgumentsVariable ? "--bind :5000" : null);

        var tcp = Assert.IsType<BindAddress.Tcp>(Assert.Single(Assert.IsType<ParseOutcome.Run>(outcome).Options.Binds));
        Assert.Equal((IPAddress.Any, 5000), (tcp.Address, tcp.Port));
    }

    [Theory]
    [InlineData("--timeout")]
    [InlineData("--graceful-timeout")]
    [InlineData("--keep-alive")]
    public void Durations_beyond_what_timers_take_are_lowered_not_crashed_on(string option)
    {
        OspreyOptions huge = Ok(option, "2600000", "app");
        OspreyOptions max = Ok(option, int.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture), "app");
        OspreyOptions ordinary = Ok(option, "86400", "app");

        int Value(OspreyOptions o) => option switch
        {
            "--timeout" => o.Timeout,
            "--graceful-timeout" => o.GracefulTimeout,
            _ => o.KeepAlive,
        };
        Assert.Equal(CommandLine.MaxDurationSeconds, Value(huge));
        Assert.Equal(CommandLine.MaxDurationSeconds, Value(max));
        Assert.Equal(86400, Value(ordinary));
        // A wait of that many seconds, plus the master's slack, still fits in int milliseconds.
        Assert.True(TimeSpan.FromSeconds(CommandLine.MaxDurationSeconds + 10).TotalMilliseconds < int.MaxValue);
    }

    [Fact]
    public void Short_flags_cluster_as_in_argparse()
    {
        OspreyOptions o = Ok("-Rw3", "app");
        Assert.True(o.EnableStdioInheritance);
        Assert.Equal(3, o.Workers);

        o = Ok("-RD", "app");
        Assert.True(o.EnableStdioInheritance && o.Daemon);

        o = Ok("-Db=127.0.0.1:9", "app");
        Assert.True(o.Daemon);
        Assert.Equal("127.0.0.1:9", Assert.Single(o.Binds).Original);

        o = Ok("-Dw", "4", "app");
        Assert.Equal(4, o.Workers);
    }

    [Fact]
    public void A_flag_followed_by_what_is_no_option_is_an_error_not_ignored()
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse("-Dx", "app"));

        Assert.Equal("option --daemon does not take a value (ignored explicit argument 'x')", error.Message);
        Assert.Equal(2, error.ExitCode);
    }

    [Fact]
    public async Task Pythonpath_entries_are_put_on_sys_path_as_gunicorn_puts_them_last_first()
    {
        using var dir = TempDir.Create("osprey-pythonpath-");
        string first = Path.Combine(dir.Path, "ppa");
        string second = Path.Combine(dir.Path, "ppb");
        Directory.CreateDirectory(first);
        Directory.CreateDirectory(second);
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "environ_app:app", Args = ["--pythonpath", $"{first},{second}"],
        });

        var python = (await RawHttp.GetJsonAsync(server)).GetProperty("python");

        // gunicorn inserts each entry at sys.path[0] in turn, after --chdir's directory.
        Assert.Equal([second, first, RepoPaths.Apps], TestSupport.Strings(python.GetProperty("path"))[..3]);
    }

    [Fact]
    public async Task Pythonpath_entries_already_on_sys_path_stay_where_they_are_as_in_gunicorn()
    {
        using var dir = TempDir.Create("osprey-pythonpath-");
        string added = Path.Combine(dir.Path, "ppa");
        Directory.CreateDirectory(added);
        const string distPackages = "/usr/lib/python3/dist-packages";
        await using var server = await OspreyServer.StartAsync(new OspreyServerOptions
        {
            App = "environ_app:app", Args = ["--pythonpath", $"{added},{RepoPaths.Apps},{distPackages},{added}"],
        });

        var path = TestSupport.Strings((await RawHttp.GetJsonAsync(server)).GetProperty("python").GetProperty("path"));

        // gunicorn inserts an entry only when it is not on sys.path yet: dist-packages is not moved
        // in front of the standard library, and nothing appears twice.
        Assert.Equal([added, RepoPaths.Apps], path[..2]);
        Assert.Single(path, p => p == added);
        Assert.Single(path, p => p == RepoPaths.Apps);
        Assert.Single(path, p => p == distPackages);
        Assert.True(path.IndexOf(distPackages) > path.FindIndex(p => p.StartsWith("/usr/lib/python3.", StringComparison.Ordinal)),
            string.Join("\n", path));
    }
}
