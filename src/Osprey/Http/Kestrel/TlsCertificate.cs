using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Osprey.Http.Kestrel;

/// <summary>A <c>--certfile</c>/<c>--keyfile</c> pair that cannot be served, said in one line.</summary>
public sealed class TlsCertificateException(string message) : Exception(message);

/// <summary>
/// The server certificate of <c>--certfile</c> and <c>--keyfile</c>, as gunicorn takes them: PEM,
/// the certificate first, then any intermediates (sent with it), the key in its own file or in the
/// certificate's.
/// </summary>
public sealed class TlsCertificate : IDisposable
{
    private TlsCertificate(X509Certificate2 certificate, X509Certificate2Collection intermediates)
    {
        Certificate = certificate;
        Intermediates = intermediates;
    }

    /// <summary>The leaf certificate, with its private key.</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>The certificates after the first in <c>--certfile</c>, sent in the handshake so clients can build the chain.</summary>
    public X509Certificate2Collection Intermediates { get; }

    /// <summary>Reads and checks both files; throws <see cref="TlsCertificateException"/> with a message naming the option and the problem.</summary>
    public static TlsCertificate Load(string certFile, string? keyFile)
    {
        string certText = ReadText("--certfile", certFile);
        string keyText = keyFile is null ? certText : ReadText("--keyfile", keyFile);
        string keyOption = keyFile is null ? "--certfile" : "--keyfile";
        string keyPath = keyFile ?? certFile;

        var all = new X509Certificate2Collection();
        try
        {
            all.ImportFromPem(certText);
        }
        catch (CryptographicException)
        {
            throw new TlsCertificateException($"--certfile: '{certFile}' holds a PEM certificate that cannot be read");
        }
        if (all.Count == 0)
        {
            throw new TlsCertificateException($"--certfile: no PEM certificate (-----BEGIN CERTIFICATE-----) in '{certFile}'");
        }

        X509Certificate2 certificate;
        try
        {
            // The first certificate of certText, which is the leaf, with the key that matches it.
            certificate = X509Certificate2.CreateFromPem(certText, keyText);
        }
        // A key of the wrong pair is an ArgumentException; everything else a CryptographicException.
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            foreach (X509Certificate2 c in all)
            {
                c.Dispose();
            }
            // .NET's own messages are resource keys in this build; say what is wrong in words.
            string problem = keyText.Contains("-----BEGIN ENCRYPTED PRIVATE KEY-----", StringComparison.Ordinal)
                    || keyText.Contains("Proc-Type: 4,ENCRYPTED", StringComparison.Ordinal)
                ? $"the private key in '{keyPath}' is encrypted; give an unencrypted key (openssl pkey -in KEY -out PLAIN)"
                : keyText.Contains("PRIVATE KEY-----", StringComparison.Ordinal)
                    ? $"the private key in '{keyPath}' does not match the certificate in '{certFile}'"
                    : $"no PEM private key (-----BEGIN PRIVATE KEY-----) in '{keyPath}'";
            throw new TlsCertificateException($"{keyOption}: {problem}");
        }

        all[0].Dispose();
        all.RemoveAt(0);
        return new TlsCertificate(certificate, all);
    }

    /// <summary>What to warn about a certificate clients will refuse, or null.</summary>
    public string? ValidityWarning(DateTime now) =>
        now > Certificate.NotAfter ? $"the TLS certificate ({Certificate.Subject}) expired on {Certificate.NotAfter:u}"
        : now < Certificate.NotBefore ? $"the TLS certificate ({Certificate.Subject}) is not valid before {Certificate.NotBefore:u}"
        : null;

    private static string ReadText(string option, string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (FileNotFoundException)
        {
            throw new TlsCertificateException($"{option}: file '{path}' does not exist");
        }
        catch (DirectoryNotFoundException)
        {
            throw new TlsCertificateException($"{option}: file '{path}' does not exist");
        }
        catch (UnauthorizedAccessException)
        {
            throw new TlsCertificateException($"{option}: cannot read '{path}' (permission denied, or a directory)");
        }
        catch (IOException)
        {
            throw new TlsCertificateException($"{option}: cannot read '{path}'");
        }
    }

    public void Dispose()
    {
        Certificate.Dispose();
        foreach (X509Certificate2 c in Intermediates)
        {
            c.Dispose();
        }
    }
}
