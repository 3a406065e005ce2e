using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Osprey.Http.Kestrel;

/// <summary>gunicorn's <c>--cert-reqs</c>: whether clients must present a certificate (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED).</summary>
public enum ClientCertificates { None = 0, Optional = 1, Required = 2 }

/// <summary>A <c>--certfile</c>/<c>--keyfile</c> pair that cannot be served, said in one line.</summary>
public sealed class TlsCertificateException(string message) : Exception(message);

/// <summary>
/// The server certificate of <c>--certfile</c> and <c>--keyfile</c>, as gunicorn takes them: PEM,
/// the certificate first, then any intermediates (sent with it), the key in its own file or in the
/// certificate's.
/// </summary>
public sealed class TlsCertificate : IDisposable
{
    private readonly X509Certificate2Collection _clientAuthorities;

    private TlsCertificate(X509Certificate2 certificate, X509Certificate2Collection intermediates,
        ClientCertificates clientCertificates, X509Certificate2Collection clientAuthorities)
    {
        Certificate = certificate;
        Intermediates = intermediates;
        ClientCertificates = clientCertificates;
        _clientAuthorities = clientAuthorities;
    }

    /// <summary>Whether a client certificate is asked for, and whether a connection without one is refused.</summary>
    public ClientCertificates ClientCertificates { get; }

    /// <summary>The leaf certificate, with its private key.</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>The certificates after the first in <c>--certfile</c>, sent in the handshake so clients can build the chain.</summary>
    public X509Certificate2Collection Intermediates { get; }

    /// <summary>Reads and checks the files; throws <see cref="TlsCertificateException"/> with a message naming the option and the problem.</summary>
    /// <param name="caFile"><c>--ca-certs</c>: the authorities a client certificate must chain to (PEM), needed unless <paramref name="clientCertificates"/> is None.</param>
    public static TlsCertificate Load(string certFile, string? keyFile, string? caFile = null, ClientCertificates clientCertificates = ClientCertificates.None)
    {
        var authorities = new X509Certificate2Collection();
        if (clientCertificates != ClientCertificates.None && caFile is not null)
        {
            ImportCertificates("--ca-certs", caFile, ReadText("--ca-certs", caFile), authorities);
        }

        string certText = ReadText("--certfile", certFile);
        string keyText = keyFile is null ? certText : ReadText("--keyfile", keyFile);
        string keyOption = keyFile is null ? "--certfile" : "--keyfile";
        string keyPath = keyFile ?? certFile;

        var all = new X509Certificate2Collection();
        ImportCertificates("--certfile", certFile, certText, all);

        X509Certificate2 certificate;
        try
        {
            // The first certificate of certText, which is the leaf, with the key that matches it.
            certificate = X509Certificate2.CreateFromPem(certText, keyText);
        }
        // A key of the wrong pair is an ArgumentException; everything else a CryptographicException.
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            string? unsupported = UnsupportedKeyType(all[0]);
            foreach (X509Certificate2 c in all)
            {
                c.Dispose();
            }
            if (unsupported is not null)
            {
                // .NET loads only RSA, ECDSA and DSA keys: an Ed25519 pair would otherwise read as "does not match".
                throw new TlsCertificateException(
                    $"--certfile: the certificate in '{certFile}' has a key of type {unsupported}, which is not supported; use an RSA or ECDSA certificate and key");
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
        return new TlsCertificate(certificate, all, clientCertificates, authorities);
    }

    /// <summary>Adds every certificate of <paramref name="text"/> to <paramref name="into"/>; throws when one cannot be read or there is none.</summary>
    private static void ImportCertificates(string option, string path, string text, X509Certificate2Collection into)
    {
        try
        {
            into.ImportFromPem(text);
        }
        catch (CryptographicException)
        {
            throw new TlsCertificateException($"{option}: '{path}' holds a PEM certificate that cannot be read");
        }
        // ImportFromPem passes over a block whose base64 is damaged as if it were not there; without
        // this count such a file would be "no PEM certificate", or quietly lose a certificate.
        int blocks = 0;
        for (int at = text.IndexOf(CertificateMarker, StringComparison.Ordinal); at >= 0;
            at = text.IndexOf(CertificateMarker, at + CertificateMarker.Length, StringComparison.Ordinal))
        {
            blocks++;
        }
        if (into.Count < blocks)
        {
            foreach (X509Certificate2 c in into)
            {
                c.Dispose();
            }
            throw new TlsCertificateException($"{option}: '{path}' holds a PEM certificate that cannot be read");
        }
        if (into.Count == 0)
        {
            throw new TlsCertificateException($"{option}: no PEM certificate ({CertificateMarker}) in '{path}'");
        }
    }

    private const string CertificateMarker = "-----BEGIN CERTIFICATE-----";

    /// <summary>The name of the certificate's key algorithm when .NET cannot load a private key of it, else null.</summary>
    private static string? UnsupportedKeyType(X509Certificate2 certificate) => certificate.PublicKey.Oid.Value switch
    {
        // RSA, EC and DSA: loadable, so a failure was about the key itself.
        "1.2.840.113549.1.1.1" or "1.2.840.10045.2.1" or "1.2.840.10040.4.1" => null,
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        string oid => oid,
        null => "unknown",
    };

    /// <summary>
    /// Kestrel's check of a client certificate: it must chain to one of the <c>--ca-certs</c>
    /// authorities (only those: the system's roots vouch for no client here) and be meant for client
    /// authentication, as OpenSSL checks it for gunicorn. Revocation is not checked.
    /// </summary>
    public bool ValidateClientCertificate(X509Certificate2 certificate, X509Chain? presented, SslPolicyErrors errors)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_clientAuthorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid("1.3.6.1.5.5.7.3.2"));
        if (presented is not null)
        {
            // Intermediates the client sent with its certificate.
            chain.ChainPolicy.ExtraStore.AddRange(presented.ChainPolicy.ExtraStore);
        }
        return chain.Build(certificate);
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
        foreach (X509Certificate2 c in _clientAuthorities)
        {
            c.Dispose();
        }
    }
}
