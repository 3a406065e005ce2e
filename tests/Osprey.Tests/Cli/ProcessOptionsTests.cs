using System.Net;
using Osprey.Cli;

namespace Osprey.Tests.Cli;

/// <summary>The process-model options: --max-requests, --max-requests-jitter, --max-worker-memory, --pid, --name, --preload, --umask, --user, --group.</summary>
public sealed class ProcessOptionsTests
{
    private static ParseOutcome Parse(params string[] args) => CommandLine.Parse(args, _ => [IPAddress.Loopback]);

    private static OspreyOptions Ok(params string[] args) => Assert.IsType<ParseOutcome.Run>(Parse(args)).Options;

    private static string Err(params string[] args)
    {
        var error = Assert.IsType<ParseOutcome.Error>(Parse(args));
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    [Fact]
    public void Defaults_disable_recycling_and_name_nothing()
    {
        OspreyOptions o = Ok("app");
        Assert.Equal(0, o.MaxRequests);
        Assert.Equal(0, o.MaxRequestsJitter);
        Assert.Equal(0, o.MaxWorkerMemory);
        Assert.Null(o.PidFile);
        Assert.Null(o.Name);
        Assert.False(o.Preload);
        Assert.Equal(0, o.Umask);
        Assert.Null(o.User);
        Assert.Null(o.Group);
        Assert.False(o.Daemon);
        Assert.True(Ok("-D", "app").Daemon);
        Assert.True(Ok("--daemon", "app").Daemon);
    }

    [Fact]
    public void User_and_group_are_kept_as_given_for_the_master_to_look_up()
    {
        OspreyOptions o = Ok("-u", "www-data", "-g", "33", "app");
        Assert.Equal(("www-data", "33"), (o.User, o.Group));
        o = Ok("--user=1000", "--group", "staff", "app");
        Assert.Equal(("1000", "staff"), (o.User, o.Group));
        Assert.Equal("--user: value must not be empty", Err("--user=", "app"));
        Assert.Equal("--group: value must not be empty", Err("-g", "", "app"));
    }

    [Fact]
    public void Options_set_their_fields()
    {
        OspreyOptions o = Ok("--max-requests", "1000", "--max-requests-jitter=50", "--max-worker-memory", "512",
            "--pid", "run/osprey.pid", "-n", "shop", "--preload", "-m", "0o007", "app");
        Assert.Equal(1000, o.MaxRequests);
        Assert.Equal(50, o.MaxRequestsJitter);
        Assert.Equal(512, o.MaxWorkerMemory);
        Assert.Equal(Path.GetFullPath("run/osprey.pid"), o.PidFile);
        Assert.Equal("shop", o.Name);
        Assert.True(o.Preload);
        Assert.Equal(7, o.Umask);
        Assert.Equal("shop", Ok("--name", "shop", "app").Name);
        Assert.Equal(Path.GetFullPath("x.pid"), Ok("-p", "x.pid", "app").PidFile);
    }

    [Theory]
    [InlineData("0o22", 18)]
    [InlineData("022", 18)]
    [InlineData("0x12", 18)]
    [InlineData("18", 18)]
    [InlineData("0", 0)]
    [InlineData("0o777", 511)]
    public void Umask_is_read_as_gunicorn_reads_it(string text, int expected) =>
        Assert.Equal(expected, Ok("--umask", text, "app").Umask);

    [Theory]
    [InlineData("--max-requests", "-1", "--max-requests: '-1' is not a non-negative integer")]
    [InlineData("--max-requests-jitter", "x", "--max-requests-jitter: 'x' is not a non-negative integer")]
    [InlineData("--max-worker-memory", "1.5", "--max-worker-memory: '1.5' is not a non-negative integer")]
    [InlineData("--umask", "0o8", "--umask: '0o8' is not a file mode (e.g. 0o22, 022 or 18)")]
    [InlineData("--umask", "0o1000", "--umask: '0o1000' is not a file mode (e.g. 0o22, 022 or 18)")]
    [InlineData("--umask", "rw", "--umask: 'rw' is not a file mode (e.g. 0o22, 022 or 18)")]
    [InlineData("--pid", "", "--pid: value must not be empty")]
    [InlineData("--name", "", "--name: value must not be empty")]
    public void Bad_values_are_one_clear_line(string option, string value, string expected) =>
        Assert.Equal(expected, Err(option, value, "app"));

    [Fact]
    public void Preload_takes_no_value() =>
        Assert.Equal("option --preload does not take a value", Err("--preload=yes", "app"));

    [Fact]
    public void Help_lists_every_process_option()
    {
        foreach (var option in new[] { "--max-requests", "--max-requests-jitter", "--max-worker-memory", "--pid", "--name", "--preload", "--umask" })
        {
            Assert.Contains(option, CommandLine.HelpText, StringComparison.Ordinal);
        }
    }
}
