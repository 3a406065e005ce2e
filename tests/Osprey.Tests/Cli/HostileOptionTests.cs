using Osprey.Cli;

namespace Osprey.Tests.Cli;

/// <summary>--header-timeout, --min-request-body-rate, --max-connections .</summary>
public sealed class HostileOptionTests
{
    private static OspreyOptions Ok(params string[] args) =>
        Assert.IsType<ParseOutcome.Run>(CommandLine.Parse(args, _ => [])).Options;

    private static string Err(params string[] args)
    {
        var error = Assert.IsType<ParseOutcome.Error>(CommandLine.Parse(args, _ => []));
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    [Fact]
    public void Defaults_are_safe()
    {
        OspreyOptions o = Ok("app");
        Assert.Equal(20, o.HeaderTimeout);
        Assert.Equal(240, o.MinRequestBodyRate);
        Assert.Equal(10_000, o.MaxConnections);
    }

    [Fact]
    public void Values_are_parsed()
    {
        OspreyOptions o = Ok("--header-timeout", "5", "--min-request-body-rate=0", "--max-connections", "64", "app");
        Assert.Equal(5, o.HeaderTimeout);
        Assert.Equal(0, o.MinRequestBodyRate);
        Assert.Equal(64, o.MaxConnections);
        Assert.Equal(0, Ok("--max-connections", "0", "app").MaxConnections);
    }

    [Theory]
    [InlineData("--header-timeout", "0", "--header-timeout: '0' is not an integer between 1 and 86400")]
    [InlineData("--header-timeout", "soon", "--header-timeout: 'soon' is not an integer between 1 and 86400")]
    [InlineData("--min-request-body-rate", "-1", "--min-request-body-rate: '-1' is not a non-negative integer")]
    [InlineData("--min-request-body-rate", "1k", "--min-request-body-rate: '1k' is not a non-negative integer")]
    [InlineData("--max-connections", "-1", "--max-connections: '-1' is not a non-negative integer")]
    [InlineData("--max-connections", "many", "--max-connections: 'many' is not a non-negative integer")]
    public void Bad_values_are_one_line_errors(string option, string value, string expected)
    {
        Assert.Equal(expected, Err(option, value, "app"));
    }

    [Fact]
    public void Help_lists_the_options()
    {
        foreach (string option in new[] { "--header-timeout", "--min-request-body-rate", "--max-connections" })
        {
            Assert.Contains(option, CommandLine.HelpText, StringComparison.Ordinal);
        }
    }
}
