namespace Osprey.Tests.Infrastructure;

/// <summary>Where things are: the repository root (found by walking up to Osprey.slnx), the test apps, the server.</summary>
public static class RepoPaths
{
    private static readonly Lazy<string> LazyRoot = new(FindRoot);

    /// <summary>The Debian interpreter, which has python3-flask and python3-django.</summary>
    public const string SystemPython = "/usr/bin/python3";

    public static string Root => LazyRoot.Value;

    /// <summary>tests/apps: the WSGI apps the integration tests serve.</summary>
    public static string Apps => Path.Combine(Root, "tests", "apps");

    /// <summary>
    /// The server's apphost, copied next to the test assembly by the ProjectReference;
    /// $OSPREY_TEST_EXECUTABLE overrides it (to run the suite against another build).
    /// </summary>
    public static string OspreyExecutable =>
        Environment.GetEnvironmentVariable("OSPREY_TEST_EXECUTABLE") is { Length: > 0 } custom
            ? custom
            : Path.Combine(AppContext.BaseDirectory, "osprey");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Osprey.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"No Osprey.slnx above {AppContext.BaseDirectory}");
    }
}
