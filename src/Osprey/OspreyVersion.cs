using System.Reflection;

namespace Osprey;

/// <summary>The release number, as <c>osprey --version</c> prints it and SERVER_SOFTWARE carries it.</summary>
internal static class OspreyVersion
{
    /// <summary>The assembly's informational version without the "+commit" the SDK appends (SourceLink): users want the release.</summary>
    public static string Release { get; } = ReadRelease();

    private static string ReadRelease()
    {
        Assembly assembly = typeof(OspreyVersion).Assembly;
        string version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString(3)
            ?? "0.0.0";
        int plus = version.IndexOf('+', StringComparison.Ordinal);
        return plus >= 0 ? version[..plus] : version;
    }
}
