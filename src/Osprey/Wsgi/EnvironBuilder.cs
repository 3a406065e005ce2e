using System.Buffers;
using System.Buffers.Text;
using System.Net;
using System.Text;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>
/// Builds each request's environ from a copy of a template holding everything constant
/// (wsgi.version, wsgi.errors, SCRIPT_NAME, SERVER_SOFTWARE...), with keys interned once for the process.
/// Needs the GIL for everything, which is also what makes its caches safe to share.
/// </summary>
internal sealed class EnvironBuilder
{
    private const int MaxCachedHeaderNames = 512;

    /// <summary>The proxy kinds come last, so one comparison tells whether a header is one of them.</summary>
    private enum HeaderKind : byte { Http, ContentType, ContentLength, Dropped, Forwarded, XForwardedFor, XForwardedProto, XForwardedHost, XForwardedSsl, XForwardedProtocol }

    private readonly record struct HeaderKey(nint Key, HeaderKind Kind);

    private readonly PyRef _template;
    private readonly byte[] _rootPath;
    private readonly Dictionary<string, HeaderKey> _headerKeys = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, HeaderKey>.AlternateLookup<ReadOnlySpan<char>> _headerLookup;
    private readonly Dictionary<string, PyRef> _cachedValues = new(StringComparer.Ordinal);
    // The method, scheme and client address usually come as the very string of the previous
    // request (known methods are constants, engines share one string per client address), so a
    // reference comparison finds them without hashing. Cleared with _cachedValues.
    private RecentValue _recentMethod;
    private RecentValue _recentScheme;
    private RecentValue _recentRemote;
    private readonly PyRef[] _protocols;
    private readonly PyRef _emptyString;
    private readonly TrustedProxies _trustedProxies;
    private string? _lastPeer;
    private bool _lastPeerTrusted;

    private readonly PyRef _requestMethod = Py.Intern("REQUEST_METHOD");
    private readonly PyRef _pathInfo = Py.Intern("PATH_INFO");
    private readonly PyRef _queryString = Py.Intern("QUERY_STRING");
    private readonly PyRef _contentType = Py.Intern("CONTENT_TYPE");
    private readonly PyRef _contentLength = Py.Intern("CONTENT_LENGTH");
    private readonly PyRef _serverName = Py.Intern("SERVER_NAME");
    private readonly PyRef _serverPort = Py.Intern("SERVER_PORT");
    private readonly PyRef _serverProtocol = Py.Intern("SERVER_PROTOCOL");
    private readonly PyRef _remoteAddr = Py.Intern("REMOTE_ADDR");
    private readonly PyRef _remotePort = Py.Intern("REMOTE_PORT");
    private readonly PyRef _wsgiInput = Py.Intern("wsgi.input");
    private readonly PyRef _urlScheme = Py.Intern("wsgi.url_scheme");
    private readonly PyRef _httpHost = Py.Intern("HTTP_HOST");
    private readonly PyRef _httpForwarded = Py.Intern("HTTP_FORWARDED");
    private readonly PyRef _httpXForwardedFor = Py.Intern("HTTP_X_FORWARDED_FOR");
    private readonly PyRef _httpXForwardedProto = Py.Intern("HTTP_X_FORWARDED_PROTO");
    private readonly PyRef _httpXForwardedHost = Py.Intern("HTTP_X_FORWARDED_HOST");
    private readonly PyRef _httpXForwardedSsl = Py.Intern("HTTP_X_FORWARDED_SSL");
    private readonly PyRef _httpXForwardedProtocol = Py.Intern("HTTP_X_FORWARDED_PROTOCOL");

    public EnvironBuilder(string rootPath, PyBorrowed errors, PyBorrowed fileWrapper, bool multithread, bool multiprocess,
        TrustedProxies trustedProxies)
    {
        _trustedProxies = trustedProxies;
        _rootPath = Encoding.Latin1.GetBytes(rootPath);
        _headerLookup = _headerKeys.GetAlternateLookup<ReadOnlySpan<char>>();
        _emptyString = Py.Str("");
        _protocols = [Py.Intern("HTTP/1.0"), Py.Intern("HTTP/1.1"), Py.Intern("HTTP/2.0")];

        _template = Py.Dict();
        PyBorrowed t = _template.Borrow();
        using (PyRef one = Py.Int(1))
        using (PyRef zero = Py.Int(0))
        using (PyRef version = Py.Tuple(one.Borrow(), zero.Borrow()))
        {
            Set(t, "wsgi.version", version.Borrow());
        }
        Set(t, "wsgi.errors", errors);
        Set(t, "wsgi.file_wrapper", fileWrapper);
        Set(t, "wsgi.multithread", multithread ? Py.True : Py.False);
        Set(t, "wsgi.multiprocess", multiprocess ? Py.True : Py.False);
        Set(t, "wsgi.run_once", Py.False);
        Set(t, "wsgi.input_terminated", Py.True);
        using (PyRef script = Py.StrLatin1(_rootPath))
        {
            Set(t, "SCRIPT_NAME", script.Borrow());
        }
        Set(t, "QUERY_STRING", _emptyString.Borrow());
        // RFC 3875 §4.1.17 (gunicorn, uWSGI and waitress all set it); a template entry costs no request anything.
        using (PyRef software = Py.Str("osprey/" + OspreyVersion.Release))
        {
            Set(t, "SERVER_SOFTWARE", software.Borrow());
        }

        static void Set(PyBorrowed dict, string key, PyBorrowed value)
        {
            using PyRef k = Py.Intern(key);
            Py.SetItem(dict, k.Borrow(), value);
        }
    }

    public PyRef Build(RequestHead request, PyBorrowed input)
    {
        PyRef environ = _template.Borrow().CopyDict();
        try
        {
            PyBorrowed env = environ.Borrow();
            Py.SetItem(env, _requestMethod.Borrow(), Cached(request.Method, ref _recentMethod));
            SetPathAndQuery(env, request.Target);
            Py.SetItem(env, _serverProtocol.Borrow(), _protocols[(int)request.Version].Borrow());
            Py.SetItem(env, _remoteAddr.Borrow(), Cached(request.RemoteAddress, ref _recentRemote));
            SetNumber(env, _remotePort.Borrow(), request.RemotePort);
            Py.SetItem(env, _urlScheme.Borrow(), Cached(request.Scheme, ref _recentScheme));
            Py.SetItem(env, _wsgiInput.Borrow(), input);

            int hostIndex = -1;
            bool proxyHeaders = false;
            for (int i = 0; i < request.HeaderCount; i++)
            {
                ReadOnlySpan<byte> name = request.HeaderName(i);
                HeaderKey key = KeyFor(name);
                if (key.Kind != HeaderKind.Http)
                {
                    if (key.Kind == HeaderKind.Dropped)
                    {
                        continue;
                    }
                    proxyHeaders |= key.Kind >= HeaderKind.Forwarded;
                }
                if (hostIndex < 0 && name.Length == 4 && Ascii.EqualsIgnoreCase(name, "host"u8))
                {
                    hostIndex = i;
                }
                SetHeader(env, key.Key, request.HeaderValue(i));
            }
            ReadOnlySpan<byte> host = hostIndex >= 0 ? request.HeaderValue(hostIndex) : default;
            string scheme = request.Scheme;
            // Without proxy headers (the common case) this costs the one test of proxyHeaders.
            if (proxyHeaders && PeerIsTrusted(request.RemoteAddress))
            {
                ApplyForwarded(env, request, ref host, ref scheme);
            }
            SetServerNameAndPort(env, request, host, scheme);
            return environ;
        }
        catch
        {
            environ.Dispose();
            throw;
        }
    }

    /// <summary>Engines format the peer address once per connection, so a reference comparison keeps the parse per connection.</summary>
    private bool PeerIsTrusted(string peer)
    {
        if (!ReferenceEquals(peer, _lastPeer))
        {
            _lastPeerTrusted = _trustedProxies.ContainsPeer(peer);
            _lastPeer = peer;
        }
        return _lastPeerTrusted;
    }

    /// <summary>
    /// The request as the trusted proxy received it: REMOTE_ADDR/REMOTE_PORT, wsgi.url_scheme and
    /// HTTP_HOST. The X-Forwarded-*/Forwarded keys themselves stay in the environ as sent.
    /// Reads the joined values back from the environ, so repeated headers count as one list.
    /// </summary>
    private void ApplyForwarded(PyBorrowed env, RequestHead request, ref ReadOnlySpan<byte> host, ref string scheme)
    {
        ForwardedRequest forwarded = ForwardedHeaders.Resolve(
            HeaderText(env, _httpForwarded), HeaderText(env, _httpXForwardedFor),
            HeaderText(env, _httpXForwardedProto), HeaderText(env, _httpXForwardedHost), _trustedProxies);
        if (forwarded.ClientAddress is IPAddress client)
        {
            string address = (client.IsIPv4MappedToIPv6 ? client.MapToIPv4() : client).ToString();
            // X-Forwarded-For carries no port: 0 then, as uvicorn does, rather than the proxy's own port.
            int port = Math.Max(forwarded.ClientPort, 0);
            Py.SetItem(env, _remoteAddr.Borrow(), Cached(address));
            SetNumber(env, _remotePort.Borrow(), port);
            // The access log names the same client as REMOTE_ADDR, as gunicorn's %(h)s does.
            request.RemoteAddress = address;
            request.RemotePort = port;
        }
        if ((forwarded.Scheme ?? ForwardedHeaders.SchemeFromSecureFlags(
            HeaderText(env, _httpXForwardedSsl), HeaderText(env, _httpXForwardedProtocol))) is string forwardedScheme)
        {
            scheme = forwardedScheme;
            Py.SetItem(env, _urlScheme.Borrow(), Cached(forwardedScheme));
        }
        if (!forwarded.Host.IsEmpty)
        {
            host = forwarded.Host;
            using PyRef text = Py.StrLatin1(host);
            Py.SetItem(env, _httpHost.Borrow(), text.Borrow());
        }
    }

    /// <summary>A header's (joined) value as stored in the environ; latin-1 strs outside ASCII come back as UTF-8, which no valid proxy value contains.</summary>
    private static ReadOnlySpan<byte> HeaderText(PyBorrowed env, PyRef key)
    {
        PyBorrowed value = env.GetDictItem(key.Borrow());
        return value.IsNull ? default : value.AsUtf8();
    }

    /// <summary>Repeated headers are joined with ',' as CGI does (cookies with "; ", as HTTP/2 joins them).</summary>
    private void SetHeader(PyBorrowed env, nint key, ReadOnlySpan<byte> value)
    {
        var keyRef = new PyBorrowed(key);
        PyBorrowed existing = env.GetDictItem(keyRef);
        if (existing.IsNull)
        {
            using PyRef text = Py.StrLatin1(value);
            Py.SetItem(env, keyRef, text.Borrow());
            return;
        }
        byte[]? scratch = null;
        existing.TryGetLatin1(ref scratch, out ReadOnlySpan<byte> previous);
        bool cookie = keyRef.AsUtf8().SequenceEqual("HTTP_COOKIE"u8);
        byte[] joined = ArrayPool<byte>.Shared.Rent(previous.Length + value.Length + 2);
        previous.CopyTo(joined);
        int length = previous.Length;
        joined[length++] = cookie ? (byte)';' : (byte)',';
        if (cookie)
        {
            joined[length++] = (byte)' ';
        }
        value.CopyTo(joined.AsSpan(length));
        length += value.Length;
        using (PyRef text = Py.StrLatin1(joined.AsSpan(0, length)))
        {
            Py.SetItem(env, keyRef, text.Borrow());
        }
        ArrayPool<byte>.Shared.Return(joined);
    }

    private void SetPathAndQuery(PyBorrowed env, ReadOnlySpan<byte> target)
    {
        // absolute-form (GET http://host/path): the path starts after the authority.
        if (target.Length > 0 && target[0] != '/' && target[0] != '*')
        {
            int scheme = target.IndexOf("://"u8);
            if (scheme > 0)
            {
                ReadOnlySpan<byte> rest = target[(scheme + 3)..];
                int slash = rest.IndexOfAny((byte)'/', (byte)'?');
                target = slash < 0 ? "/"u8 : rest[slash..];
            }
        }
        int question = target.IndexOf((byte)'?');
        ReadOnlySpan<byte> rawPath = question < 0 ? target : target[..question];
        if (question >= 0)
        {
            using PyRef query = Py.StrLatin1(target[(question + 1)..]);
            Py.SetItem(env, _queryString.Borrow(), query.Borrow());
        }

        byte[]? rented = null;
        Span<byte> decoded = rawPath.Length <= 1024 ? stackalloc byte[1024] : (rented = ArrayPool<byte>.Shared.Rent(rawPath.Length));
        int length = PercentDecode(rawPath, decoded);
        ReadOnlySpan<byte> path = decoded[..length];
        if (_rootPath.Length > 0 && path.StartsWith(_rootPath) && (path.Length == _rootPath.Length || path[_rootPath.Length] == '/'))
        {
            path = path[_rootPath.Length..];
        }
        using (PyRef pathInfo = Py.StrLatin1(path))
        {
            Py.SetItem(env, _pathInfo.Borrow(), pathInfo.Borrow());
        }
        if (rented is not null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>%XX to the byte it names, %2F included; a malformed escape stays as it is.</summary>
    internal static int PercentDecode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int n = 0;
        for (int i = 0; i < source.Length; i++)
        {
            byte b = source[i];
            if (b == '%' && i + 2 < source.Length && HexValue(source[i + 1]) >= 0 && HexValue(source[i + 2]) >= 0)
            {
                destination[n++] = (byte)((HexValue(source[i + 1]) << 4) | HexValue(source[i + 2]));
                i += 2;
            }
            else
            {
                destination[n++] = b;
            }
        }
        return n;
    }

    private static int HexValue(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
        _ => -1,
    };

    /// <summary>SERVER_NAME and SERVER_PORT from the Host header, as gunicorn does, else from the socket.</summary>
    private void SetServerNameAndPort(PyBorrowed env, RequestHead request, ReadOnlySpan<byte> host, string scheme)
    {
        if (host.Length > 0)
        {
            ReadOnlySpan<byte> name = host;
            ReadOnlySpan<byte> port = default;
            if (host[0] == '[')
            {
                int close = host.IndexOf((byte)']');
                if (close > 0)
                {
                    name = host[..(close + 1)];
                    if (close + 1 < host.Length && host[close + 1] == ':')
                    {
                        port = host[(close + 2)..];
                    }
                }
            }
            else
            {
                int colon = host.LastIndexOf((byte)':');
                if (colon >= 0)
                {
                    name = host[..colon];
                    port = host[(colon + 1)..];
                }
            }
            using (PyRef serverName = Py.StrLatin1(name))
            {
                Py.SetItem(env, _serverName.Borrow(), serverName.Borrow());
            }
            if (port.Length > 0)
            {
                using PyRef serverPort = Py.StrLatin1(port);
                Py.SetItem(env, _serverPort.Borrow(), serverPort.Borrow());
            }
            else
            {
                Py.SetItem(env, _serverPort.Borrow(), Cached(scheme == "https" ? "443" : "80"));
            }
            return;
        }
        Py.SetItem(env, _serverName.Borrow(), Cached(request.LocalAddress));
        SetNumber(env, _serverPort.Borrow(), request.LocalPort);
    }

    private static void SetNumber(PyBorrowed env, PyBorrowed key, int value)
    {
        Span<byte> digits = stackalloc byte[12];
        Utf8Formatter.TryFormat(value, digits, out int written);
        using PyRef text = Py.StrLatin1(digits[..written]);
        Py.SetItem(env, key, text.Borrow());
    }

    private readonly record struct RecentValue(string? Text, nint Str);

    private PyBorrowed Cached(string value, ref RecentValue recent)
    {
        if (ReferenceEquals(recent.Text, value))
        {
            return new PyBorrowed(recent.Str);
        }
        PyBorrowed str = Cached(value);
        recent = new RecentValue(value, str.Handle);
        return str;
    }

    /// <summary>A str for a value that repeats across requests (methods, schemes, addresses), made once.</summary>
    private PyBorrowed Cached(string value)
    {
        if (!_cachedValues.TryGetValue(value, out PyRef cached))
        {
            if (_cachedValues.Count >= 4096)
            {
                // Bounded: a flood of distinct client addresses must not grow this without end.
                foreach (PyRef old in _cachedValues.Values)
                {
                    old.Dispose();
                }
                _cachedValues.Clear();
                _recentMethod = _recentScheme = _recentRemote = default;
            }
            cached = Py.StrLatin1(Encoding.Latin1.GetBytes(value));
            _cachedValues[value] = cached;
        }
        return cached.Borrow();
    }

    private HeaderKey KeyFor(ReadOnlySpan<byte> name)
    {
        Span<char> chars = name.Length <= 256 ? stackalloc char[name.Length] : new char[name.Length];
        Encoding.Latin1.GetChars(name, chars);
        if (_headerLookup.TryGetValue(chars, out HeaderKey key))
        {
            return key;
        }
        key = MakeKey(chars);
        if (_headerKeys.Count < MaxCachedHeaderNames || key.Kind != HeaderKind.Http)
        {
            _headerKeys[new string(chars)] = key;
        }
        return key;
    }

    private HeaderKey MakeKey(ReadOnlySpan<char> name)
    {
        // A '_' in a header name would let a client forge HTTP_X_FORWARDED_FOR with X_Forwarded_For.
        if (name.Contains('_'))
        {
            return new HeaderKey(0, HeaderKind.Dropped);
        }
        if (name.Equals("content-type", StringComparison.OrdinalIgnoreCase))
        {
            return new HeaderKey(_contentType.Handle, HeaderKind.ContentType);
        }
        if (name.Equals("content-length", StringComparison.OrdinalIgnoreCase))
        {
            return new HeaderKey(_contentLength.Handle, HeaderKind.ContentLength);
        }
        HeaderKind kind = name.Length switch
        {
            9 when name.Equals("forwarded", StringComparison.OrdinalIgnoreCase) => HeaderKind.Forwarded,
            15 when name.Equals("x-forwarded-for", StringComparison.OrdinalIgnoreCase) => HeaderKind.XForwardedFor,
            16 when name.Equals("x-forwarded-host", StringComparison.OrdinalIgnoreCase) => HeaderKind.XForwardedHost,
            17 when name.Equals("x-forwarded-proto", StringComparison.OrdinalIgnoreCase) => HeaderKind.XForwardedProto,
            15 when name.Equals("x-forwarded-ssl", StringComparison.OrdinalIgnoreCase) => HeaderKind.XForwardedSsl,
            20 when name.Equals("x-forwarded-protocol", StringComparison.OrdinalIgnoreCase) => HeaderKind.XForwardedProtocol,
            _ => HeaderKind.Http,
        };
        var text = new StringBuilder("HTTP_", 5 + name.Length);
        foreach (char c in name)
        {
            text.Append(c == '-' ? '_' : char.ToUpperInvariant(c));
        }
        // Interned keys live for the process, which is what lets the cache hold raw handles.
        return new HeaderKey(Py.Intern(text.ToString()).Detach(), kind);
    }
}
