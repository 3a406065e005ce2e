using Osprey.Tests.Infrastructure;

namespace Osprey.Tests.Cli;

/// <summary>
/// <c>--check-config</c> and <c>--print-config</c> fail where a start would: an unknown <c>--user</c> or
/// <c>--group</c> is one line and exit 1 (gunicorn: "No such user"), not a pass followed by a failed deploy.
/// </summary>
public sealed class CheckConfigIdentityTests
{
    private static Task<ProcessResult> RunAsync(params string[] args) =>
        OspreyServer.RunToCompletionAsync(
            ["--python", RepoPaths.SystemPython, "--chdir", RepoPaths.Apps, .. args, "workers_app:app"], TimeSpan.FromSeconds(60));

    [Theory]
    [InlineData("--check-config", "--user", "nosuchuser", "--user: no such user 'nosuchuser'")]
    [InlineData("--check-config", "--group", "nosuchgroup", "--group: no such group 'nosuchgroup'")]
    [InlineData("--print-config", "--user", "nosuchuser", "--user: no such user 'nosuchuser'")]
    public async Task An_unknown_user_or_group_fails_the_check(string check, string option, string value, string message)
    {
        ProcessResult result = await RunAsync(check, option, value);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Equal($"osprey: error: {message}\n", result.Stderr);
    }

    [Fact]
    public async Task A_known_user_passes_the_check()
    {
        if (Environment.UserName != "root")
        {
            return; // --user needs root, at start as in the check.
        }

        ProcessResult result = await RunAsync("--check-config", "--user", "nobody", "--group", "nogroup");

        Assert.True(result.ExitCode == 0, result.ToString());
    }
}
