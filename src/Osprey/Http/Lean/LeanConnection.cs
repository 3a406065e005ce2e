using System.Buffers;
using System.Buffers.Text;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core.Internal.Http;
using Microsoft.Win32.SafeHandles;
using Osprey.Logging;
using Osprey.Wsgi;
using KestrelVersion = Microsoft.AspNetCore.Server.Kestrel.Core.Internal.Http.HttpVersion;
using WsgiVersion = Osprey.Wsgi.HttpVersion;
using HttpMethod = Microsoft.AspNetCore.Server.Kestrel.Core.Internal.Http.HttpMethod;

namespace Osprey.Http.Lean;

internal enum ConnectionState { ReadingHead, ReadingBody, Dispatched, Flushing, Lingering, Closed }

/// <summary>What a Python thread asks the loop to do with a connection it hands back.</summary>
internal enum LoopAction { Read, Flush, Linger, Close, Stream }

/// <summary>
/// One client connection and, while a request is in flight, that request's exchange.
/// Ownership moves: the loop thread owns the connection while it reads a request;
/// <see cref="LeanEngine"/> then hands it to a Python thread, which writes the response
/// straight to the socket (no hop back to the loop for a response the socket takes at once) and
/// finally re-arms the socket or hands the connection back to the loop. The one thing shared
/// is the queue of unsent output while a response streams (see <see cref="FlushStream"/>):
/// both threads touch it only under <c>_outputLock</c>.
/// </summary>
internal sealed class LeanConnection : IHttpExchange
{
    private static readonly HttpParser<ParseHandler> s_parser = new(showErrorDetails: false);
    // Big enough that a head with a 10 KB body arrives in one recv (8 KB took two: measured 10%
    // of the echo benchmark's requests per CPU-second). A connection idle between requests gives
    // it back (ReleaseIdleInput), so idle keep-alive connections hold no input buffer at all.
    private const int InitialInputSize = 16 * 1024;
    private const int StagingSize = OutputQueue.SegmentSize;
    /// <summary>Unsent response bytes beyond which the Python thread waits (without the GIL), as Kestrel's MaxResponseBufferSize.</summary>
    private const long OutputLimit = 1024 * 1024;
    private const int MaxHeadSize = 1024 * 1024;
    private const int ClientStallMs = 30_000;
    private const long MinResponseBytesPerSecond = HttpSettings.MinResponseBytesPerSecond;
    private const long ResponseRateWindowMs = HttpSettings.ResponseRateWindowMs;

    private readonly LeanEngine _engine;
    private readonly HttpSettings _settings;
    private readonly RequestHead _head = new();
    private readonly OutputQueue _pending = new();
    /// <summary>Guards <see cref="_pending"/> and <see cref="_streamFlushPosted"/> while a Python thread owns the connection (the staging buffer stays that thread's alone).</summary>
    private readonly Lock _outputLock = new();
    /// <summary>A <see cref="LoopAction.Stream"/> is queued for the loop and has not run yet.</summary>
    private bool _streamFlushPosted;
    /// <summary>The loop's last stream flush left output queued: the socket's next write-space edge resumes it.</summary>
    private volatile bool _streamWaitsForSpace;
    /// <summary>This response has already sent a flushed body write itself (Python thread).</summary>
    private bool _streamedDirectly;
    private RequestBodyBuffer? _body;
    /// <summary>
    /// A Content-Length body that arrived whole with its head stays where it lies in
    /// <see cref="_input"/>, which nothing else touches while the request is dispatched: these
    /// bound what is left of it to read (equal when there is none).
    /// </summary>
    private int _inPlaceBodyStart;
    private int _inPlaceBodyEnd;
    private BodyDecoder _decoder;
    private byte[] _input = [];
    private int _inputStart;
    private int _inputEnd;
    /// <summary>
    /// How far past <see cref="_inputStart"/> the search for the end of the head has looked: a head that
    /// arrives in many small pieces is searched once, not again from its start at each piece (up to 1 MB
    /// each time, which a client could make cost seconds of CPU).
    /// </summary>
    private int _headSearched;
    private byte[]? _staging;
    private int _stagingLength;

    // What the request's headers said, gathered while the parser walks them.
    private int _headerCount;
    private int _hostCount;
    private int _contentLengthCount;
    private long _contentLength;
    private int _transferEncodingCount;
    private bool _transferEncodingIsChunked;
    private bool _connectionClose;
    private bool _connectionKeepAlive;
    private bool _expectContinue;
    private int _rejectStatus;

    private WsgiVersion _version;
    private bool _isHeadRequest;
    private bool _keepAlive;
    private bool _bodyStreamed;
    private bool _continueSent;
    private long _bodyReceived;
    private bool _chunkedResponse;
    private bool _bodyAllowed;
    private volatile bool _clientGone;
    /// <summary>Rate window of a streamed (Expect: 100-continue) body: start and bytes received since.</summary>
    private long _streamWindowStarted;
    private long _streamWindowBytes;
    /// <summary>A <see cref="ResponseGate"/> state: whether the watchdog may still answer 504.</summary>
    private int _responseGate;
    private string _remoteAddress = "";
    private int _remotePort;
    private string _localAddress = "";
    private int _localPort;
    /// <summary>--proxy-protocol and a trusted peer: the connection may start with a PROXY header.</summary>
    private bool _expectProxyHeader;

    public LeanConnection(LeanEngine engine, HttpSettings settings)
    {
        _engine = engine;
        _settings = settings;
    }

    public int Fd { get; private set; } = -1;
    public uint Generation { get; private set; }
    public ulong Token => ((ulong)Generation << 32) | (uint)Fd;
    public volatile ConnectionState State;
    /// <summary>Environment.TickCount64 of the last progress, for the loop's timeouts.</summary>
    public long LastProgress;
    public bool ServedRequest;
    /// <summary>Environment.TickCount64 when the current request head began (the header timeout runs from here).</summary>
    public long HeadStarted;
    /// <summary>Environment.TickCount64 when the loop began receiving the current body (the minimum body rate runs from here).</summary>
    public long BodyStarted;
    public long BodyBytesReceived => _bodyReceived;
    /// <summary>1 when a socket event arrived while a Python thread owned the connection (edge-triggered: it will not repeat).</summary>
    private int _eventPending;
    /// <summary>The last receive filled the buffer, so the socket may hold more than the edge announced.</summary>
    private bool _socketMayHaveMore;
    private volatile bool _peerHungUp;
    public bool HasPartialRequest => _inputEnd > _inputStart;

    public void Open(int fd, uint generation, string remoteAddress, int remotePort, string localAddress, int localPort, bool expectProxyHeader)
    {
        _expectProxyHeader = expectProxyHeader;
        Fd = fd;
        Generation = generation;
        _remoteAddress = remoteAddress;
        _remotePort = remotePort;
        _localAddress = localAddress;
        _localPort = localPort;
        // The input buffer is rented by the first Receive: the one place that rents it.
        _inputStart = _inputEnd = _headSearched = 0;
        ServedRequest = false;
        _clientGone = false;
        _eventPending = 0;
        _socketMayHaveMore = false;
        _peerHungUp = false;
        _streamFlushPosted = false;
        _streamWaitsForSpace = false;
        State = ConnectionState.ReadingHead;
        LastProgress = HeadStarted = Environment.TickCount64;
    }

    /// <summary>Between requests, with nothing received: the input buffer goes back to the pool until data comes. Loop thread only.</summary>
    public void ReleaseIdleInput()
    {
        if (State == ConnectionState.ReadingHead && _inputStart == _inputEnd)
        {
            ReturnInput();
        }
    }

    private void ReturnInput()
    {
        if (_input.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_input);
            _input = [];
        }
    }

    /// <summary>Called by the loop once the socket is closed: returns buffers to their pools.</summary>
    public void Release()
    {
        State = ConnectionState.Closed;
        Fd = -1;
        _pending.Clear();
        ReturnStaging();
        DropBody();
        ReturnInput();
    }

    // ---------------------------------------------------------------- loop thread: reading

    /// <summary>A socket event for this connection. Loop thread only.</summary>
    public void OnEvent(uint mask)
    {
        if ((mask & (Syscalls.EPOLLRDHUP | Syscalls.EPOLLHUP | Syscalls.EPOLLERR)) != 0)
        {
            _peerHungUp = true;
        }
        // Publish the event before looking at the owner; the Python thread publishes the owner
        // before looking at the event (AfterResponse), so one of the two always sees the other.
        Interlocked.Exchange(ref _eventPending, 1);
        switch (State)
        {
            case ConnectionState.ReadingHead:
            case ConnectionState.ReadingBody:
            case ConnectionState.Lingering:
                if (Interlocked.Exchange(ref _eventPending, 0) == 1)
                {
                    OnReadable();
                }
                break;
            case ConnectionState.Flushing:
                if (Interlocked.Exchange(ref _eventPending, 0) == 1)
                {
                    FinishFlushing(onEvent: true);
                }
                break;
            case ConnectionState.Dispatched:
                // The event stays pending for the Python thread (it may also be input); only the
                // write space is used here, for a streamed response the loop is sending.
                if (_streamWaitsForSpace)
                {
                    FlushStream();
                }
                break;
        }
    }

    /// <summary>Receives until the socket is drained (edge-triggered) and moves the request on. Loop thread only.</summary>
    public void OnReadable()
    {
        if (State == ConnectionState.Lingering)
        {
            DrainForClose();
            return;
        }
        while (true)
        {
            int received = Receive();
            if (received < 0)
            {
                if (HasPartialRequest && State == ConnectionState.ReadingHead)
                {
                    // The client sent a request and closed its side: still answer it.
                    _peerHungUp = true;
                    Process();
                    if (State == ConnectionState.Dispatched)
                    {
                        return;
                    }
                }
                _engine.Close(this);
                return;
            }
            bool filled = received > 0 && _inputEnd == _input.Length;
            Process();
            if (State is not (ConnectionState.ReadingHead or ConnectionState.ReadingBody))
            {
                _socketMayHaveMore = filled;
                return;
            }
            // Edge-triggered: a hang-up that came with the data announces no further edge, so
            // read on to the end of input, or a truncated request would wait for the header timeout.
            if (!filled && !_peerHungUp)
            {
                return;
            }
        }
    }

    /// <summary>One non-blocking receive: the byte count, 0 when nothing is waiting, -1 when the client closed or the socket failed.</summary>
    private int Receive()
    {
        if (_inputStart == _inputEnd)
        {
            _inputStart = _inputEnd = 0;
            if (State == ConnectionState.ReadingHead)
            {
                HeadStarted = Environment.TickCount64;
            }
            if (_input.Length == 0)
            {
                _input = ArrayPool<byte>.Shared.Rent(InitialInputSize);
            }
        }
        if (_inputEnd == _input.Length)
        {
            if (_inputStart > 0)
            {
                _input.AsSpan(_inputStart, _inputEnd - _inputStart).CopyTo(_input);
                _inputEnd -= _inputStart;
                _inputStart = 0;
            }
            else
            {
                byte[] larger = ArrayPool<byte>.Shared.Rent(_input.Length * 2);
                _input.AsSpan(0, _inputEnd).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_input);
                _input = larger;
            }
        }
        long received = Syscalls.Receive(Fd, _input.AsSpan(_inputEnd));
        if (received > 0)
        {
            _inputEnd += (int)received;
            LastProgress = Environment.TickCount64;
            return (int)received;
        }
        return received == -Syscalls.EAGAIN ? 0 : -1;
    }

    /// <summary>Parses what has arrived; dispatches a complete request, or waits for more. Loop thread only.</summary>
    public void Process()
    {
        if (State == ConnectionState.ReadingHead)
        {
            if (_expectProxyHeader && !ReadProxyHeader())
            {
                return;
            }
            int status = TryParseHead();
            if (status < 0)
            {
                return;
            }
            if (status > 0)
            {
                Refuse(status);
                return;
            }
            if (_decoder.Framing == BodyFraming.None || _bodyStreamed)
            {
                Dispatch();
                return;
            }
            if (_decoder.Framing == BodyFraming.ContentLength && _contentLength <= _inputEnd - _inputStart)
            {
                // Read by the Python thread straight from the input: no copy into a body buffer.
                _decoder.Decode(_input.AsSpan(_inputStart, (int)_contentLength), out int consumed, out _);
                _inPlaceBodyStart = _inputStart;
                _inPlaceBodyEnd = _inputStart + consumed;
                _inputStart += consumed;
                _bodyReceived = consumed;
                Dispatch();
                return;
            }
            State = ConnectionState.ReadingBody;
            BodyStarted = Environment.TickCount64;
            _body ??= new RequestBodyBuffer(_settings.BodyBufferSize);
            _body.Expect(_decoder.Framing == BodyFraming.ContentLength ? _contentLength : -1);
        }
        if (State == ConnectionState.ReadingBody)
        {
            int status = BufferBody();
            if (status == 0)
            {
                Dispatch();
            }
            else if (status > 0)
            {
                Refuse(status);
            }
        }
    }

    /// <summary>
    /// Takes a PROXY header off the start of the connection, if there is one. False while more
    /// input is needed (the header timeout applies as to a partial request) or when a malformed
    /// header closed the connection.
    /// </summary>
    private bool ReadProxyHeader()
    {
        ProxyHeaderStatus status = ProxyProtocol.TryParse(_input.AsSpan(_inputStart, _inputEnd - _inputStart), out int consumed, out ProxyHeader header);
        switch (status)
        {
            case ProxyHeaderStatus.NeedMore:
                return false;
            case ProxyHeaderStatus.Invalid:
                Log.Warning($"malformed PROXY protocol header from {_remoteAddress}: connection closed");
                _engine.Close(this);
                return false;
            case ProxyHeaderStatus.Parsed:
                _inputStart += consumed;
                _headSearched = 0;
                if (header.Source is not null && header.Destination is not null)
                {
                    (_remoteAddress, _remotePort) = (LeanEngine.FormatAddress(header.Source.Address), header.Source.Port);
                    (_localAddress, _localPort) = (LeanEngine.FormatAddress(header.Destination.Address), header.Destination.Port);
                }
                break;
        }
        _expectProxyHeader = false;
        return true;
    }

    private void Dispatch()
    {
        _responseGate = ResponseGate.Open;
        State = ConnectionState.Dispatched;
        _engine.Workers.Dispatch(this);
    }

    /// <summary>0 when a head was parsed, -1 when more input is needed, else the status to refuse with.</summary>
    private int TryParseHead()
    {
        // RFC 9112 §2.2: empty lines before a request line are ignored (some clients send a CRLF
        // after a POST body).
        while (_inputEnd - _inputStart >= 2 && _input[_inputStart] == '\r' && _input[_inputStart + 1] == '\n')
        {
            _inputStart += 2;
        }
        ReadOnlySpan<byte> data = _input.AsSpan(_inputStart, _inputEnd - _inputStart);
        int lineEnd = data.IndexOf((byte)'\n');
        int lineLimit = _settings.MaxRequestLine > 0 ? _settings.MaxRequestLine : MaxHeadSize;
        if (lineEnd < 0)
        {
            return data.Length > lineLimit + 1 ? StatusCodes.Status414UriTooLong : -1;
        }
        if (lineEnd > lineLimit + 1)
        {
            return StatusCodes.Status414UriTooLong;
        }
        int headLength = HeadLength(data, _headSearched);
        if (headLength < 0)
        {
            // The terminators are 2 and 3 bytes long: the next search starts where one could have begun.
            _headSearched = Math.Max(0, data.Length - 2);
            return data.Length > MaxHeadSize ? StatusCodes.Status431RequestHeaderFieldsTooLarge : -1;
        }
        _headSearched = 0;

        ResetRequest();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(_input, _inputStart, headLength));
        var handler = new ParseHandler(this);
        try
        {
            if (!s_parser.ParseRequestLine(handler, ref reader) || !s_parser.ParseHeaders(handler, ref reader))
            {
                return StatusCodes.Status400BadRequest;
            }
        }
        catch (BadHttpRequestException e)
        {
            return e.StatusCode;
        }
        if (_rejectStatus != 0)
        {
            return _rejectStatus;
        }
        _inputStart += headLength;
        return DecideFraming();
    }

    /// <summary>
    /// The length of the head up to its first empty line, or -1 when that has not arrived; nothing before
    /// <paramref name="from"/> ends it (already searched). A line ending in a bare LF counts here, so that
    /// such a head reaches the parser, which refuses it (see Osprey.csproj), instead of waiting for a
    /// CRLF CRLF that may never come.
    /// </summary>
    private static int HeadLength(ReadOnlySpan<byte> data, int from)
    {
        ReadOnlySpan<byte> unsearched = data[from..];
        int crlf = unsearched.IndexOf("\n\r\n"u8);
        int bare = (crlf >= 0 ? unsearched[..crlf] : unsearched).IndexOf("\n\n"u8);
        return bare >= 0 ? from + bare + 2 : crlf >= 0 ? from + crlf + 3 : -1;
    }

    private void ResetRequest()
    {
        _head.Reset();
        _headerCount = _hostCount = _contentLengthCount = _transferEncodingCount = _rejectStatus = 0;
        _contentLength = 0;
        _transferEncodingIsChunked = _connectionClose = _connectionKeepAlive = _expectContinue = false;
        _bodyStreamed = _continueSent = false;
        _bodyReceived = 0;
        DropBody();
    }

    /// <summary>Forgets the request body, wherever it lies, and gives back the memory it held.</summary>
    private void DropBody()
    {
        _inPlaceBodyStart = _inPlaceBodyEnd = 0;
        _body?.Reset();
    }

    private void OnStartLine(HttpVersionAndMethod versionAndMethod, TargetOffsetPathLength targetPath, Span<byte> startLine)
    {
        HttpMethod method = versionAndMethod.Method;
        _head.Method = method switch
        {
            HttpMethod.Get => "GET",
            HttpMethod.Post => "POST",
            HttpMethod.Head => "HEAD",
            HttpMethod.Put => "PUT",
            HttpMethod.Delete => "DELETE",
            HttpMethod.Patch => "PATCH",
            HttpMethod.Options => "OPTIONS",
            HttpMethod.Trace => "TRACE",
            HttpMethod.Connect => "CONNECT",
            _ => Encoding.ASCII.GetString(startLine[..versionAndMethod.MethodEnd]),
        };
        _isHeadRequest = method == HttpMethod.Head;
        _version = versionAndMethod.Version == KestrelVersion.Http10 ? WsgiVersion.Http10 : WsgiVersion.Http11;

        ReadOnlySpan<byte> target = startLine[targetPath.Offset..];
        int space = target.IndexOf((byte)' ');
        if (space >= 0)
        {
            target = target[..space];
        }
        if (!IsAcceptableTarget(target, method))
        {
            _rejectStatus = StatusCodes.Status400BadRequest;
        }
        else if (method == HttpMethod.Connect)
        {
            // A 2xx answer to CONNECT opens a tunnel, with no Content-Length (RFC 9110 §9.3.6): nothing a
            // WSGI application can give. Refused for every target, as Kestrel's engine refuses it.
            _rejectStatus = StatusCodes.Status501NotImplemented;
        }
        _head.SetTarget(target);
    }

    private static bool IsAcceptableTarget(ReadOnlySpan<byte> target, HttpMethod method)
    {
        if (target.IsEmpty)
        {
            return false;
        }
        foreach (byte b in target)
        {
            if (b <= 0x20 || b == 0x7F)
            {
                return false;
            }
        }
        if (target[0] == '/')
        {
            return true;
        }
        if (target.SequenceEqual("*"u8))
        {
            return method == HttpMethod.Options;
        }
        if (StartsWithIgnoreCase(target, "http://"u8) || StartsWithIgnoreCase(target, "https://"u8))
        {
            return true;
        }
        // authority-form belongs to CONNECT alone.
        return method == HttpMethod.Connect;
    }

    private static bool StartsWithIgnoreCase(ReadOnlySpan<byte> text, ReadOnlySpan<byte> prefix) =>
        text.Length >= prefix.Length && Ascii.EqualsIgnoreCase(text[..prefix.Length], prefix);

    private void OnHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        if (_rejectStatus != 0)
        {
            return;
        }
        if (_settings.MaxRequestHeaders > 0 && ++_headerCount > _settings.MaxRequestHeaders)
        {
            _rejectStatus = StatusCodes.Status431RequestHeaderFieldsTooLarge;
            return;
        }
        if (_settings.MaxRequestFieldSize > 0 && name.Length + 2 + value.Length > _settings.MaxRequestFieldSize)
        {
            _rejectStatus = StatusCodes.Status431RequestHeaderFieldsTooLarge;
            return;
        }
        if (!HttpToken.IsToken(name) || !IsFieldValue(value))
        {
            _rejectStatus = StatusCodes.Status400BadRequest;
            return;
        }
        switch (name.Length)
        {
            case 4 when Ascii.EqualsIgnoreCase(name, "host"u8):
                _hostCount++;
                if (!IsValidHost(value) || !MatchesTargetAuthority(_head.Target, value))
                {
                    // RFC 9112 §3.2: SERVER_NAME and SERVER_PORT come from it, so it must be a host.
                    _rejectStatus = StatusCodes.Status400BadRequest;
                }
                break;
            case 6 when Ascii.EqualsIgnoreCase(name, "expect"u8):
                _expectContinue = Ascii.EqualsIgnoreCase(value, "100-continue"u8);
                break;
            case 10 when Ascii.EqualsIgnoreCase(name, "connection"u8):
                ScanConnectionTokens(value);
                break;
            case 14 when Ascii.EqualsIgnoreCase(name, "content-length"u8):
                _contentLengthCount++;
                if (value.IsEmpty || value.Length > 18 || value.IndexOfAnyExceptInRange((byte)'0', (byte)'9') >= 0 ||
                    !Utf8Parser.TryParse(value, out _contentLength, out int consumed) || consumed != value.Length)
                {
                    _rejectStatus = StatusCodes.Status400BadRequest;
                }
                break;
            case 17 when Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8):
                _transferEncodingCount++;
                // Only a lone "chunked" is accepted: any other coding list is a smuggling vector
                // or a coding we would have to guess at.
                _transferEncodingIsChunked = Ascii.EqualsIgnoreCase(value, "chunked"u8);
                break;
        }
        _head.AddHeader(name, value);
    }

    /// <summary>
    /// An absolute-form target's authority (without userinfo) must be the Host, as a client must send it
    /// (RFC 9112 §3.2). The origin server is to use the target's and ignore Host (§3.2.2), while the application
    /// reads HTTP_HOST, and a proxy in front may have routed by either: a request on which they differ is
    /// refused, as Kestrel refuses it. A Host without the scheme's default port matches one with it.
    /// (An authority-form target is CONNECT's, which is refused before its headers are read.)
    /// </summary>
    private static bool MatchesTargetAuthority(ReadOnlySpan<byte> target, ReadOnlySpan<byte> host)
    {
        if (target.IsEmpty || target[0] == '/' || target[0] == '*')
        {
            return true;
        }
        int schemeEnd = target.IndexOf("://"u8);
        if (schemeEnd < 0)
        {
            return true;
        }
        ReadOnlySpan<byte> authority = target[(schemeEnd + 3)..];
        int end = authority.IndexOfAny((byte)'/', (byte)'?', (byte)'#');
        authority = end < 0 ? authority : authority[..end];
        authority = authority[(authority.LastIndexOf((byte)'@') + 1)..];
        if (Ascii.EqualsIgnoreCase(host, authority))
        {
            return true;
        }
        ReadOnlySpan<byte> defaultPort = schemeEnd == 5 ? ":443"u8 : ":80"u8;
        bool authorityHasPort = authority.LastIndexOf((byte)':') > authority.LastIndexOf((byte)']');
        return !authorityHasPort && host.Length == authority.Length + defaultPort.Length &&
            Ascii.EqualsIgnoreCase(host[..authority.Length], authority) && host.EndsWith(defaultPort);
    }

    /// <summary>
    /// RFC 3986's <c>host [ ":" port ]</c>: a bracketed IP literal, or a reg-name (which covers IPv4),
    /// then digits after a colon. Empty is allowed (a URI with no authority).
    /// </summary>
    private static bool IsValidHost(ReadOnlySpan<byte> value)
    {
        int hostEnd;
        if (!value.IsEmpty && value[0] == '[')
        {
            hostEnd = value.IndexOf((byte)']') + 1;
            if (hostEnd < 3 || value[1..(hostEnd - 1)].IndexOfAnyExcept(s_ipLiteralChars) >= 0)
            {
                return false;
            }
        }
        else
        {
            hostEnd = value.IndexOfAnyExcept(s_regNameChars);
            if (hostEnd < 0)
            {
                return true;
            }
        }
        ReadOnlySpan<byte> rest = value[hostEnd..];
        return rest.IsEmpty || (rest.Length > 1 && rest[0] == ':' && rest[1..].IndexOfAnyExceptInRange((byte)'0', (byte)'9') < 0);
    }

    private static readonly SearchValues<byte> s_regNameChars =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;="u8);

    private static readonly SearchValues<byte> s_ipLiteralChars = SearchValues.Create("0123456789ABCDEFabcdef:.vV"u8);

    private void ScanConnectionTokens(ReadOnlySpan<byte> value)
    {
        foreach (Range range in value.Split((byte)','))
        {
            ReadOnlySpan<byte> token = value[range].Trim(" \t"u8);
            if (Ascii.EqualsIgnoreCase(token, "close"u8))
            {
                _connectionClose = true;
            }
            else if (Ascii.EqualsIgnoreCase(token, "keep-alive"u8))
            {
                _connectionKeepAlive = true;
            }
        }
    }

    private static bool IsFieldValue(ReadOnlySpan<byte> value)
    {
        foreach (byte b in value)
        {
            if ((b < 0x20 && b != '\t') || b == 0x7F)
            {
                return false;
            }
        }
        return true;
    }


    /// <summary>RFC 9112 §6.3 framing, refusing every ambiguity a proxy in front could read differently.</summary>
    private int DecideFraming()
    {
        if (_version == WsgiVersion.Http11 ? _hostCount != 1 : _hostCount > 1)
        {
            return StatusCodes.Status400BadRequest;
        }
        BodyFraming framing = BodyFraming.None;
        if (_transferEncodingCount > 0)
        {
            if (_version == WsgiVersion.Http10 || _contentLengthCount > 0 || _transferEncodingCount > 1 || !_transferEncodingIsChunked)
            {
                return StatusCodes.Status400BadRequest;
            }
            framing = BodyFraming.Chunked;
        }
        else if (_contentLengthCount > 1)
        {
            return StatusCodes.Status400BadRequest;
        }
        else if (_contentLengthCount == 1 && _contentLength > 0)
        {
            if (_settings.MaxRequestBodySize is long limit && _contentLength > limit)
            {
                return StatusCodes.Status413PayloadTooLarge;
            }
            framing = BodyFraming.ContentLength;
        }
        _decoder.Start(framing, _contentLength);
        // --keep-alive 0 closes after every response, and says so in it.
        _keepAlive = (_version == WsgiVersion.Http11 ? !_connectionClose : _connectionKeepAlive && !_connectionClose) &&
            _settings.KeepAlive > TimeSpan.Zero;
        // The client waits for "100 Continue", which goes out when the application first reads:
        // that body is streamed to the application instead of buffered.
        _bodyStreamed = framing != BodyFraming.None && _expectContinue && _version == WsgiVersion.Http11;
        _head.Version = _version;
        _head.Scheme = "http";
        _head.RemoteAddress = _remoteAddress;
        _head.RemotePort = _remotePort;
        _head.LocalAddress = _localAddress;
        _head.LocalPort = _localPort;
        return 0;
    }

    /// <summary>Moves body bytes from the input into the body buffer: 0 when complete, -1 for more, else a status to refuse with.</summary>
    private int BufferBody()
    {
        while (true)
        {
            ReadOnlySpan<byte> input = _input.AsSpan(_inputStart, _inputEnd - _inputStart);
            DecodeStatus status = _decoder.Decode(input, out int consumed, out ReadOnlySpan<byte> data);
            _inputStart += consumed;
            switch (status)
            {
                case DecodeStatus.Data:
                    _bodyReceived += data.Length;
                    if (_settings.MaxRequestBodySize is long limit && _bodyReceived > limit)
                    {
                        return StatusCodes.Status413PayloadTooLarge;
                    }
                    _body!.Append(data);
                    break;
                case DecodeStatus.Done:
                    return 0;
                case DecodeStatus.NeedMore:
                    return -1;
                default:
                    return StatusCodes.Status400BadRequest;
            }
        }
    }

    /// <summary>Answers a request that cannot be served with a bare status and closes. Loop thread only.</summary>
    public void Refuse(int status)
    {
        _keepAlive = false;
        string reason = Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(status);
        byte[] response = Encoding.ASCII.GetBytes($"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n");
        Syscalls.Send(Fd, response, HttpDate.HeaderLine, "\r\n"u8);
        _inputStart = _inputEnd = 0;
        StartLingering();
    }

    /// <summary>Half-closes and waits briefly for the client's FIN, so a close never turns unread input into a reset that destroys the response.</summary>
    public void StartLingering()
    {
        Syscalls.Shutdown(Fd, Syscalls.SHUT_WR);
        State = ConnectionState.Lingering;
        LastProgress = Environment.TickCount64;
        DrainForClose();
    }

    private void DrainForClose()
    {
        Span<byte> scratch = stackalloc byte[4096];
        while (true)
        {
            long n = Syscalls.Receive(Fd, scratch);
            if (n == -Syscalls.EAGAIN)
            {
                return;
            }
            if (n <= 0)
            {
                _engine.Close(this);
                return;
            }
        }
    }

    // ---------------------------------------------------------------- loop thread: flushing

    /// <summary>
    /// Sends what is left of a finished response, then hands the connection back to reading.
    /// Called on a socket event (<paramref name="onEvent"/>), which is spent here and may have
    /// announced input too, or on the <see cref="LoopAction.Flush"/> that a Python thread posted.
    /// Loop thread only.
    /// </summary>
    public void FinishFlushing(bool onEvent)
    {
        if (State != ConnectionState.Flushing)
        {
            // A posted Flush that a socket event already carried out: the connection may be
            // reading, or serving its next request on a Python thread.
            return;
        }
        _socketMayHaveMore |= onEvent;
        long before = _pending.BufferedBytes;
        if (!_pending.Flush(Fd))
        {
            _engine.Close(this);
            return;
        }
        if (_pending.BufferedBytes != before)
        {
            LastProgress = Environment.TickCount64;
        }
        if (!_pending.IsEmpty)
        {
            // The short or failed write armed the socket's write-space wakeup: an edge will come.
            return;
        }
        AfterResponse(onLoop: true);
    }

    /// <summary>
    /// Sends streamed output that a Python thread queued while it goes on producing the next
    /// block (PEP 3333 lets a server buffer a block if it keeps transmitting while the application
    /// works). Blocks that pile up meanwhile leave in one send: a generator of small items costs a
    /// few sends instead of one send and one packet each. Loop thread only: on
    /// <see cref="LoopAction.Stream"/> and on write space while the request is dispatched.
    /// </summary>
    public void FlushStream()
    {
        lock (_outputLock)
        {
            _streamFlushPosted = false;
            // Once the response is complete (Flushing) FinishFlushing finishes it; in any other state
            // this is a stale action of an earlier request and its output is long gone.
            if (State != ConnectionState.Dispatched || _clientGone)
            {
                _streamWaitsForSpace = false;
                return;
            }
            long before = _pending.BufferedBytes;
            if (!_pending.Flush(Fd))
            {
                // The Python thread sees it at its next write and aborts the exchange.
                _clientGone = true;
                _streamWaitsForSpace = false;
                return;
            }
            if (_pending.BufferedBytes != before)
            {
                LastProgress = Environment.TickCount64;
            }
            _streamWaitsForSpace = !_pending.IsEmpty;
        }
    }

    /// <summary>Under <c>_outputLock</c>: whether the caller must post <see cref="LoopAction.Stream"/> (outside the lock) so the loop sends what is queued.</summary>
    private bool NeedsStreamFlush()
    {
        if (_streamFlushPosted || _pending.IsEmpty)
        {
            return false;
        }
        _streamFlushPosted = true;
        return true;
    }

    /// <summary>The response is fully written: keep the connection for the next request, or close it.</summary>
    private void AfterResponse(bool onLoop)
    {
        ReturnStaging();
        DropBody();
        ServedRequest = true;
        LastProgress = HeadStarted = Environment.TickCount64;
        if (!_keepAlive || _clientGone)
        {
            if (onLoop)
            {
                StartLingering();
            }
            else
            {
                _engine.Post(this, LoopAction.Linger);
            }
            return;
        }
        bool mustRead = _inputEnd > _inputStart || _socketMayHaveMore || _peerHungUp;
        _socketMayHaveMore = false;
        if (onLoop)
        {
            State = ConnectionState.ReadingHead;
            // A flush that a Python thread posted spent no event, and when it left the whole
            // response to the loop (LeaveToLoop) the client has had no time to send more: read
            // only if input is known to wait.
            if (Interlocked.Exchange(ref _eventPending, 0) == 1 || mustRead)
            {
                OnReadable();
            }
            return;
        }
        // Hand the connection back: publish the owner, then look for an event the loop saw
        // while we owned it (see OnEvent). Nothing here touches the connection afterwards
        // except to post it, because the loop may already be reading it.
        State = ConnectionState.ReadingHead;
        Interlocked.MemoryBarrier();
        if (Interlocked.Exchange(ref _eventPending, 0) == 1 || mustRead)
        {
            _engine.Post(this, LoopAction.Read);
        }
    }

    // ---------------------------------------------------------------- Python thread: IHttpExchange

    public RequestHead Request => _head;

    public bool BodyIsBuffered => !_bodyStreamed;

    public long BufferedBodyRemaining =>
        _bodyStreamed ? -1 : _inPlaceBodyEnd > _inPlaceBodyStart ? _inPlaceBodyEnd - _inPlaceBodyStart : _body?.Remaining ?? 0;

    public bool ClientDisconnected => _clientGone;

    public int ReadBody(Span<byte> destination)
    {
        if (!_bodyStreamed)
        {
            if (_inPlaceBodyEnd > _inPlaceBodyStart)
            {
                int n = Math.Min(destination.Length, _inPlaceBodyEnd - _inPlaceBodyStart);
                _input.AsSpan(_inPlaceBodyStart, n).CopyTo(destination);
                _inPlaceBodyStart += n;
                return n;
            }
            return _body?.Read(destination) ?? 0;
        }
        if (destination.IsEmpty)
        {
            return 0;
        }
        if (!_continueSent)
        {
            _continueSent = true;
            _streamWindowStarted = Environment.TickCount64;
            _streamWindowBytes = 0;
            int gate = Interlocked.CompareExchange(ref _responseGate, ResponseGate.Continue, ResponseGate.Open);
            if (gate == ResponseGate.Open)
            {
                bool sent = SendAll("HTTP/1.1 100 Continue\r\n\r\n"u8);
                // Fails only when the watchdog cut the connection meanwhile; it set _clientGone then.
                Interlocked.CompareExchange(ref _responseGate, ResponseGate.Open, ResponseGate.Continue);
                if (!sent || _clientGone)
                {
                    return 0;
                }
            }
            else if (gate != ResponseGate.Started)
            {
                // The watchdog answered or cut this request.
                _clientGone = true;
                return 0;
            }
            // Else the response has begun, and a 100 may no longer precede it (RFC 9110 §15.2):
            // the body is read as the client sends it anyway (WriteHead announced the close).
        }
        while (true)
        {
            ReadOnlySpan<byte> input = _input.AsSpan(_inputStart, _inputEnd - _inputStart);
            DecodeStatus status = _decoder.Decode(input, out int consumed, out ReadOnlySpan<byte> data, destination.Length);
            _inputStart += consumed;
            if (status == DecodeStatus.Data)
            {
                int n = data.Length;
                data.CopyTo(destination);
                _bodyReceived += n;
                if (_settings.MaxRequestBodySize is long limit && _bodyReceived > limit)
                {
                    _keepAlive = false;
                    return 0;
                }
                return n;
            }
            if (status == DecodeStatus.Done)
            {
                return 0;
            }
            if (status == DecodeStatus.Invalid)
            {
                _keepAlive = false;
                return 0;
            }
            if (!ReceiveBlocking())
            {
                _clientGone = true;
                _keepAlive = false;
                return 0;
            }
        }
    }

    /// <summary>Waits (Python thread, GIL released) for more body bytes from a streaming client.</summary>
    /// <remarks>
    /// A streamed body holds a Python thread while it arrives, so --min-request-body-rate applies
    /// here too, over windows of the grace period (the loop applies it to buffered bodies).
    /// </remarks>
    private bool ReceiveBlocking()
    {
        long minRate = _settings.MinRequestBodyRate;
        long windowMs = (long)HttpSettings.BodyRateGracePeriod.TotalMilliseconds;
        while (true)
        {
            int received = Receive();
            if (received != 0)
            {
                _streamWindowBytes += Math.Max(received, 0);
                return received > 0;
            }
            if (!Syscalls.Poll(Fd, forWrite: false, minRate > 0 ? 1000 : ClientStallMs))
            {
                if (minRate == 0)
                {
                    return false;
                }
            }
            if (minRate > 0)
            {
                long window = Environment.TickCount64 - _streamWindowStarted;
                if (window >= windowMs)
                {
                    if (_streamWindowBytes * 1000 < minRate * window)
                    {
                        return false;
                    }
                    _streamWindowStarted += window;
                    _streamWindowBytes = 0;
                }
            }
        }
    }

    public void WriteHead(ResponseHead head)
    {
        if (Interlocked.CompareExchange(ref _responseGate, ResponseGate.Started, ResponseGate.Open) != ResponseGate.Open)
        {
            // The watchdog answered this request: nothing of the application's goes out.
            _clientGone = true;
            return;
        }
        if (_bodyStreamed && !_decoder.IsDone)
        {
            // The client may or may not send the rest of a body the application has not read:
            // the connection cannot be trusted for another request, so the response says it closes
            // (RFC 9110 §15.2.1, §10.1.1).
            _keepAlive = false;
        }
        else if (_engine.IsStopping)
        {
            // The client learns from the response itself that the connection ends, instead of having its next
            // request, perhaps already on the way, meet a close (see LeanEngine.StopIdleGraceMs).
            _keepAlive = false;
        }
        int code = head.StatusCode;
        _bodyAllowed = !_isHeadRequest && code is not ((>= 100 and < 200) or 204 or 304);
        bool lengthKnown = head.ContentLength >= 0;
        _chunkedResponse = false;
        if (!lengthKnown && _bodyAllowed)
        {
            if (_version == WsgiVersion.Http11)
            {
                _chunkedResponse = true;
            }
            else
            {
                // HTTP/1.0 has no chunking: the body ends when the connection does.
                _keepAlive = false;
            }
        }

        _streamedDirectly = false;
        // From the output queue's pool: a finished response left to the loop hands the queue this very buffer.
        _staging ??= OutputQueue.Rent(StagingSize);
        _stagingLength = 0;
        Stage("HTTP/1.1 "u8);
        Span<byte> digits = stackalloc byte[3];
        digits[0] = (byte)('0' + code / 100);
        digits[1] = (byte)('0' + code / 10 % 10);
        digits[2] = (byte)('0' + code % 10);
        Stage(digits);
        Stage(" "u8);
        Stage(head.Reason);
        Stage("\r\n"u8);
        bool hasDate = false;
        for (int i = 0; i < head.HeaderCount; i++)
        {
            ReadOnlySpan<byte> name = head.HeaderName(i);
            hasDate |= name.Length == 4 && Ascii.EqualsIgnoreCase(name, "date"u8);
            Stage(name);
            Stage(": "u8);
            Stage(head.HeaderValue(i));
            Stage("\r\n"u8);
        }
        if (!hasDate)
        {
            Stage(HttpDate.HeaderLine);
        }
        if (_chunkedResponse)
        {
            Stage("Transfer-Encoding: chunked\r\n"u8);
        }
        if (!_keepAlive)
        {
            Stage("Connection: close\r\n"u8);
        }
        else if (_version == WsgiVersion.Http10)
        {
            Stage("Connection: keep-alive\r\n"u8);
        }
        Stage("\r\n"u8);
    }

    private void Stage(ReadOnlySpan<byte> bytes)
    {
        if (_stagingLength + bytes.Length > _staging!.Length)
        {
            byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Max(_staging.Length * 2, _stagingLength + bytes.Length));
            _staging.AsSpan(0, _stagingLength).CopyTo(larger);
            OutputQueue.Return(_staging);
            _staging = larger;
        }
        bytes.CopyTo(_staging.AsSpan(_stagingLength));
        _stagingLength += bytes.Length;
    }

    private void ReturnStaging()
    {
        if (_staging is not null)
        {
            OutputQueue.Return(_staging);
            _staging = null;
        }
        _stagingLength = 0;
    }

    /// <summary>
    /// Whether the Python thread should leave <paramref name="length"/> bytes of output, ready to go,
    /// to the loop instead of sending them itself: when other requests wait for it, and the bytes
    /// are few enough that copying them costs less than a send. The loop sends them while the
    /// application runs the next request, and the Python thread runs request after request with no
    /// syscall in between. On this kind of VM a syscall costs the code after it several
    /// microseconds of cold TLB and caches: a Flask call took 39–42 µs in a plain loop and
    /// 47–55 µs with one getppid() between calls (bench/syscall_cost.py, bench/README.md).
    /// </summary>
    private bool LeaveToLoop(int length) =>
        length is > 0 and <= StagingSize && _engine.Workers.HasQueuedRequests;

    public bool WriteBody(ReadOnlySpan<byte> data, bool flush)
    {
        if (_clientGone || data.IsEmpty)
        {
            return true;
        }
        Span<byte> prefix = stackalloc byte[18];
        int prefixLength = 0;
        ReadOnlySpan<byte> suffix = default;
        if (_chunkedResponse)
        {
            Utf8Formatter.TryFormat(data.Length, prefix, out prefixLength, new StandardFormat('x'));
            prefix[prefixLength++] = (byte)'\r';
            prefix[prefixLength++] = (byte)'\n';
            suffix = "\r\n"u8;
        }
        ReadOnlySpan<byte> framing = prefix[..prefixLength];
        bool post;
        bool belowLimit;
        lock (_outputLock)
        {
            int total = framing.Length + data.Length + suffix.Length;
            if (!_pending.IsEmpty || (flush && (_streamedDirectly || LeaveToLoop(_stagingLength + total))))
            {
                // Earlier output is still queued (keep the order), or a stream goes on: the loop
                // sends it while the application produces its next block (PEP 3333's "continue
                // transmission"). The first block of a stream goes out directly, unless other
                // requests wait for this thread (LeaveToLoop).
                _pending.Append(_staging.AsSpan(0, _stagingLength));
                _stagingLength = 0;
                _pending.Append(framing);
                _pending.Append(data);
                _pending.Append(suffix);
            }
            else
            {
                if (!flush && _staging is not null && _stagingLength + total <= _staging.Length)
                {
                    Stage(framing);
                    Stage(data);
                    Stage(suffix);
                    return true;
                }
                SendOrQueue(_staging.AsSpan(0, _stagingLength), framing, data, suffix);
                _stagingLength = 0;
                _streamedDirectly |= flush;
            }
            // Whatever the socket did not take goes on from the loop, even if the application
            // writes nothing more for a while.
            post = NeedsStreamFlush();
            belowLimit = _pending.BufferedBytes <= OutputLimit;
        }
        if (post)
        {
            _engine.Post(this, LoopAction.Stream);
        }
        return belowLimit;
    }

    /// <summary>Sends the parts without blocking; whatever the socket does not take is queued, in order.</summary>
    private void SendOrQueue(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, ReadOnlySpan<byte> c, ReadOnlySpan<byte> d)
    {
        long total = a.Length + b.Length + c.Length + d.Length;
        long sent = Syscalls.Send(Fd, a, b, c, d);
        if (sent == total)
        {
            return;
        }
        if (sent < 0)
        {
            if (sent != -Syscalls.EAGAIN)
            {
                _clientGone = true;
                return;
            }
            sent = 0;
        }
        QueueUnsent(ref sent, a);
        QueueUnsent(ref sent, b);
        QueueUnsent(ref sent, c);
        QueueUnsent(ref sent, d);
    }

    private void QueueUnsent(ref long sent, ReadOnlySpan<byte> part)
    {
        if (sent >= part.Length)
        {
            sent -= part.Length;
            return;
        }
        _pending.Append(part[(int)sent..]);
        sent = 0;
    }

    /// <summary>Blocking send of a small control message (100 Continue) on a Python thread.</summary>
    private bool SendAll(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            long sent = Syscalls.Send(Fd, data);
            if (sent > 0)
            {
                data = data[(int)sent..];
            }
            else if (sent != -Syscalls.EAGAIN || !Syscalls.Poll(Fd, forWrite: true, ClientStallMs))
            {
                _clientGone = true;
                return false;
            }
        }
        return true;
    }

    public bool WaitForDrain()
    {
        long windowStarted = Environment.TickCount64;
        long windowBytes = 0;
        long lastBuffered = -1;
        while (!_clientGone)
        {
            // The loop may be sending the same queue on write-space edges; whoever holds the
            // lock sends, in order. Nothing is appended meanwhile, so the queue's shrinking
            // counts what the client took from either thread.
            lock (_outputLock)
            {
                long before = lastBuffered < 0 ? _pending.BufferedBytes : lastBuffered;
                if (!_pending.Flush(Fd))
                {
                    _clientGone = true;
                    break;
                }
                lastBuffered = _pending.BufferedBytes;
                windowBytes += before - lastBuffered;
                if (_pending.IsEmpty)
                {
                    break;
                }
            }
            long window = Environment.TickCount64 - windowStarted;
            if (window >= ResponseRateWindowMs)
            {
                if (windowBytes * 1000 < MinResponseBytesPerSecond * window)
                {
                    // Too slow a reader to be worth a Python thread: as far as we are concerned it is gone.
                    _clientGone = true;
                    break;
                }
                windowStarted += window;
                windowBytes = 0;
            }
            Syscalls.Poll(Fd, forWrite: true, 1000);
        }
        return !_clientGone;
    }

    public bool SendFile(SafeFileHandle file, long offset, long count)
    {
        if (_clientGone)
        {
            return false;
        }
        bool post;
        lock (_outputLock)
        {
            if (!SendFileLocked(file, offset, count))
            {
                return false;
            }
            post = NeedsStreamFlush();
        }
        if (post)
        {
            _engine.Post(this, LoopAction.Stream);
        }
        return !_clientGone;
    }

    private bool SendFileLocked(SafeFileHandle file, long offset, long count)
    {
        if (_chunkedResponse)
        {
            Span<byte> prefix = stackalloc byte[18];
            Utf8Formatter.TryFormat(count, prefix, out int length, new StandardFormat('x'));
            prefix[length++] = (byte)'\r';
            prefix[length++] = (byte)'\n';
            Stage(prefix[..length]);
        }
        if (_pending.IsEmpty)
        {
            SendOrQueue(_staging.AsSpan(0, _stagingLength), default, default, default);
        }
        else
        {
            _pending.Append(_staging.AsSpan(0, _stagingLength));
        }
        _stagingLength = 0;
        int fileFd = (int)file.DangerousGetHandle();
        if (Log.IsEnabled(Severity.Debug))
        {
            Log.Debug($"sendfile: {count} bytes of fd {fileFd} from offset {offset}");
        }
        if (_pending.IsEmpty && !_clientGone && !OutputQueue.SendFileRange(Fd, fileFd, ref offset, ref count))
        {
            _clientGone = true;
            return false;
        }
        if (count > 0)
        {
            // The loop finishes the transfer, so a slow reader holds no Python thread.
            int duplicate = Syscalls.Dup(fileFd);
            if (duplicate < 0)
            {
                _clientGone = true;
                return false;
            }
            _pending.AppendFile(duplicate, offset, count);
        }
        if (_chunkedResponse)
        {
            if (_pending.IsEmpty)
            {
                Stage("\r\n"u8);
            }
            else
            {
                _pending.Append("\r\n"u8);
            }
        }
        return true;
    }

    public void Complete(bool closeConnection)
    {
        if (Interlocked.Exchange(ref _responseGate, ResponseGate.Completed) is ResponseGate.Answered504 or ResponseGate.Cut)
        {
            ReleaseAfterTimeout();
            return;
        }
        if (closeConnection || (_bodyStreamed && !_decoder.IsDone))
        {
            _keepAlive = false;
        }
        LoopAction handOver;
        lock (_outputLock)
        {
            if (!_clientGone)
            {
                if (_chunkedResponse)
                {
                    if (_pending.IsEmpty)
                    {
                        Stage("0\r\n\r\n"u8);
                    }
                    else
                    {
                        _pending.Append("0\r\n\r\n"u8);
                    }
                }
                if (_pending.IsEmpty && !LeaveToLoop(_stagingLength))
                {
                    SendOrQueue(_staging.AsSpan(0, _stagingLength), default, default, default);
                }
                else if (_staging is not null)
                {
                    // The loop sends the staged bytes from the staging buffer itself.
                    _pending.Adopt(_staging, _stagingLength);
                    _staging = null;
                }
                _stagingLength = 0;
            }
            if (_clientGone)
            {
                _pending.Clear();
                ReturnStaging();
                handOver = LoopAction.Close;
            }
            else if (!_pending.IsEmpty)
            {
                // From here the loop alone sends the rest (a stream flush still queued sees
                // Flushing and leaves it to this action).
                ReturnStaging();
                State = ConnectionState.Flushing;
                LastProgress = Environment.TickCount64;
                handOver = LoopAction.Flush;
            }
            else
            {
                handOver = LoopAction.Read;
            }
        }
        if (handOver == LoopAction.Read)
        {
            AfterResponse(onLoop: false);
        }
        else
        {
            _engine.Post(this, handOver);
        }
    }

    public void Abort()
    {
        if (Interlocked.Exchange(ref _responseGate, ResponseGate.Completed) is ResponseGate.Answered504 or ResponseGate.Cut)
        {
            ReleaseAfterTimeout();
            return;
        }
        _keepAlive = false;
        lock (_outputLock)
        {
            _pending.Clear();
            ReturnStaging();
        }
        _engine.Post(this, LoopAction.Close);
    }

    private void ReleaseAfterTimeout()
    {
        _keepAlive = false;
        lock (_outputLock)
        {
            _pending.Clear();
            ReturnStaging();
        }
        // After a 504 the client may still be reading it: linger (the write side is already
        // shut down) rather than close, which could turn unread input into a reset.
        _engine.Post(this, LoopAction.Linger);
    }

    // ---------------------------------------------------------------- watchdog thread

    /// <summary>
    /// The request ran past --timeout (watchdog thread). The Python thread owns the connection
    /// and may be writing: the gate decides whether the response is still ours to give (504) or
    /// can only be cut. Either way the socket is shut down, not closed: the descriptor stays
    /// the Python thread's until it aborts the exchange, so it cannot be reused under it.
    /// </summary>
    public TimeoutOutcome TryTimeOut()
    {
        TimeoutOutcome outcome = ResponseGate.ClaimForTimeout(ref _responseGate);
        if (outcome == TimeoutOutcome.Answered504)
        {
            _clientGone = true;
            SendTimeoutResponse();
        }
        else if (outcome == TimeoutOutcome.ConnectionClosed)
        {
            _clientGone = true;
            // Wakes a Python thread blocked in poll (draining output, reading a streamed body).
            Syscalls.Shutdown(Fd, Syscalls.SHUT_RDWR);
        }
        return outcome;
    }

    private void SendTimeoutResponse()
    {
        // Nothing of this response was sent and the previous one was flushed before this request
        // was dispatched, so the socket's buffer takes these few hundred bytes at once.
        ReadOnlySpan<byte> body = _isHeadRequest ? default : ResponseGate.TimeoutBody;
        Span<byte> head = stackalloc byte[160];
        int length = 0;
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: "u8.CopyTo(head);
        length += "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: "u8.Length;
        Utf8Formatter.TryFormat(ResponseGate.TimeoutBody.Length, head[length..], out int digits);
        length += digits;
        head[length++] = (byte)'\r';
        head[length++] = (byte)'\n';
        Syscalls.Send(Fd, head[..length], HttpDate.HeaderLine, "\r\n"u8, body);
        Syscalls.Shutdown(Fd, Syscalls.SHUT_WR);
    }

    /// <summary>Kestrel's parser calls back through this struct, so the generic parser is specialised for it and the calls inline.</summary>
    private readonly struct ParseHandler(LeanConnection connection) : IHttpRequestLineHandler, IHttpHeadersHandler
    {
        public void OnStartLine(HttpVersionAndMethod versionAndMethod, TargetOffsetPathLength targetPath, Span<byte> startLine) =>
            connection.OnStartLine(versionAndMethod, targetPath, startLine);

        public void OnHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) => connection.OnHeader(name, value);

        public void OnHeadersComplete(bool endStream)
        {
        }

        // Only HPACK and QPACK use indexed headers; HTTP/1.1 parsing never calls these.
        public void OnStaticIndexedHeader(int index) => throw new NotSupportedException();

        public void OnStaticIndexedHeader(int index, ReadOnlySpan<byte> value) => throw new NotSupportedException();
    }
}
