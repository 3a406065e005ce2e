namespace Osprey.Tests.Infrastructure;

/// <summary>A temporary directory removed on Dispose.</summary>
public sealed class TempDir : IDisposable
{
    private TempDir(string path) => Path = path;

    public string Path { get; }

    public static TempDir Create(string prefix) => new(Directory.CreateTempSubdirectory(prefix).FullName);

    /// <summary>Writes <paramref name="relativePath"/> (its directories created); returns its full path.</summary>
    public string Write(string relativePath, string text)
    {
        string full = System.IO.Path.Combine(Path, relativePath);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        File.WriteAllText(full, text);
        return full;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A server still writing: the OS temp cleaner will get it.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
