using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Tasks.Sources;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Win32.SafeHandles;
using Osprey.Logging;
using Osprey.Wsgi;

namespace Osprey.Http.Kestrel;

/// <summary>
/// One Kestrel connection's current request, seen through <see cref="IHttpExchange"/>. Reused for
/// every request on the connection. Kestrel's side runs <see cref="ProcessAsync"/>; the Python
/// thread calls the <see cref="IHttpExchange"/> members and finally Complete or Abort, which
/// resumes Kestrel's side on the thread pool (never inline on the Python thread).
/// </summary>
internal sealed class KestrelExchange : IHttpExchange, IValueTaskSource
{
    private static readonly TimeSpan AbortGrace = TimeSpan.FromMilliseconds(50);

    private readonly RequestHead _head = new();
    private readonly RequestBodyBuffer _body;
    private ManualResetValueTaskSourceCore<bool> _completion = new() { RunContinuationsAsynchronously = true };

    private IHttpRequestFeature _request = null!;
    private IHttpResponseFeature _response = null!;
    private IHttpResponseBodyFeature _responseBody = null!;
    private IHttpRequestLifetimeFeature _lifetime = null!;
    private IHttpConnectionFeature? _connection;
    private IHttpRequestBodyDetectionFeature? _bodyDetection;
    private IRequestBodyPipeFeature _bodyPipe = null!;
    private IHttpMaxRequestBodySizeFeature? _bodySizeLimit;
    /// <summary>--limit-request-body checked here on decoded bytes, for chunked bodies (Kestrel counts their framing too).</summary>
    private long? _decodedBodyLimit;
    private long _bodyBytesRead;
    private IHttpMinRequestBodyDataRateFeature? _bodyRateFeature;
    /// <summary>
    /// --min-request-body-rate applied here to an HTTP/2 stream: Kestrel applies its own check to the
    /// whole connection and aborts it, with every other stream and no 408.
    /// </summary>
    private bool _timeBodyRate;
    /// <summary>Time spent waiting for body bytes, which is what the rate is measured over (as Kestrel measures it).</summary>
    private long _bodyWaitMs;
    /// <summary>Cancels a body read at the moment the client falls below the rate; kept for the exchange's next reads.</summary>
    private CancellationTokenSource? _bodyDeadline;
    private bool _bodyTooSlow;
    private string? _connectionId;
    private string _remoteAddress = "";
    private string _localAddress = "";
    /// <summary>The connection's TCP socket, for what its peer has acknowledged (null for a unix socket or no socket at all).</summary>
    private Socket? _socket;

    private bool _bodyBuffered;
    private bool _aborted;
    /// <summary>The body fell short of its Content-Length: set by every <see cref="Complete"/>, read only after one.</summary>
    private bool _shortBody;
    private volatile bool _clientGone;
    /// <summary>A <see cref="ResponseGate"/> state: whether the watchdog may still answer 504.</summary>
    private int _responseGate;
    /// <summary>Set by the watchdog before it resumes <see cref="ProcessAsync"/> to send the 504.</summary>
    private bool _timedOut;
    /// <summary>Completed when the Python thread lets go of a timed-out exchange (timeout path only).</summary>
    private TaskCompletionSource? _released;
    private long _responseBodyBytes;
    /// <summary>HTTP/2 body bytes written to the pipe since its last flush.</summary>
    private long _unflushedBytes;
    private Task<FlushResult>? _pendingFlush;
    /// <summary>HTTP/1.x bytes go to Kestrel in pieces of at most this size (the stage's), so a long list of items, or a file, gets the pipe's backpressure.</summary>
    private const int StageSize = 64 * 1024;
    /// <summary>Bytes of <see cref="_pendingFlush"/>: what the client will have taken when it completes.</summary>
    private long _pendingFlushBytes;

    /// <summary>
    /// HTTP/2 response bytes go to Kestrel in flushes of at most this size (one default DATA
    /// frame). A stream's flush completes only once Kestrel has sent all of it, and Kestrel does not
    /// count a stream stalled by its flow-control window against MinResponseDataRate; completed
    /// flushes are then the only measure of what the client takes, so they must be small enough to
    /// complete within a rate window for any client worth keeping (one a window is about 3 KB/s).
    /// </summary>
    private const int StreamPiece = 16 * 1024;
    private const long MinResponseBytesPerSecond = HttpSettings.MinResponseBytesPerSecond;
    private const long ResponseRateWindowMs = HttpSettings.ResponseRateWindowMs;
    /// <summary>
    /// HTTP/1.x body bytes gathered here and given to Kestrel with WriteAsync, which counts them for
    /// MinResponseDataRate. Bytes put in its pipe with GetSpan/Advance are not counted
    /// (Http1OutputProducer.Advance, when the response is not chunked), so each flush was timed as a
    /// write of nothing and any flush waiting past the grace period on a full pipe (a large response
    /// to a client reading at 100 KB/s) cut the connection. One copy more, on the Kestrel engine only.
    /// </summary>
    private byte[]? _stage;
    private int _staged;
    /// <summary>A write's bytes beyond the piece whose flush is pending (rented; only when the client fell behind).</summary>
    private byte[]? _held;
    private int _heldOffset;
    private int _heldCount;

    private readonly HttpSettings _settings;
    private readonly StopNotice _stopNotice;

    public KestrelExchange(HttpSettings settings, StopNotice stopNotice)
    {
        _settings = settings;
        _stopNotice = stopNotice;
        _body = new RequestBodyBuffer(settings.BodyBufferSize);
    }

    public RequestHead Request => _head;
    public bool BodyIsBuffered => _bodyBuffered;
    public long BufferedBodyRemaining => _bodyBuffered ? _body.Remaining : -1;
    public bool ClientDisconnected => _clientGone || _lifetime.RequestAborted.IsCancellationRequested;

    public void Bind(IFeatureCollection features)
    {
        _request = features.GetRequiredFeature<IHttpRequestFeature>();
        _response = features.GetRequiredFeature<IHttpResponseFeature>();
        _responseBody = features.GetRequiredFeature<IHttpResponseBodyFeature>();
        _lifetime = features.GetRequiredFeature<IHttpRequestLifetimeFeature>();
        _bodyDetection = features.Get<IHttpRequestBodyDetectionFeature>();
        _bodyPipe = features.GetRequiredFeature<IRequestBodyPipeFeature>();
        _bodySizeLimit = features.Get<IHttpMaxRequestBodySizeFeature>();
        _bodyRateFeature = features.Get<IHttpMinRequestBodyDataRateFeature>();
        IHttpConnectionFeature? connection = features.Get<IHttpConnectionFeature>();
        if (connection is not null && !ReferenceEquals(connection.ConnectionId, _connectionId))
        {
            // Addresses are per connection: format them once, not per request.
            _connectionId = connection.ConnectionId;
            _remoteAddress = FormatAddress(connection.RemoteIpAddress);
            _localAddress = FormatAddress(connection.LocalIpAddress);
            Socket? socket = features.Get<IConnectionSocketFeature>()?.Socket;
            _socket = socket?.ProtocolType == ProtocolType.Tcp ? socket : null;
        }
        _connection = connection;
    }

    public async Task ProcessAsync(PythonWorkers workers)
    {
        int refusal = FillHead();
        if (refusal != 0)
        {
            // Before the application, and without reading the body: the connection closes after
            // this answer, so nothing the client sent after the head is ever taken as a request.
            _response.StatusCode = refusal;
            CloseConnectionAfterResponse();
            return;
        }
        _bodyBytesRead = 0;
        _bodyWaitMs = 0;
        _bodyTooSlow = false;
        _timeBodyRate = false;
        if (_head.Version == Wsgi.HttpVersion.Http2 && _settings.MinRequestBodyRate > 0 && _bodyRateFeature is { } bodyRate)
        {
            // Null is the one value Kestrel takes for an HTTP/2 stream: its connection-wide check skips this one.
            bodyRate.MinDataRate = null;
            _timeBodyRate = true;
        }
        _decodedBodyLimit = null;
        if (_settings.MaxRequestBodySize is long limit && _request.Headers.TransferEncoding.Count > 0 &&
            _bodySizeLimit is { IsReadOnly: false })
        {
            _bodySizeLimit.MaxRequestBodySize = null;
            _decodedBodyLimit = limit;
        }
        _bodyBuffered = true;
        _aborted = false;
        _clientGone = false;
        _responseBodyBytes = _unflushedBytes = 0;
        if (_bodyDetection?.CanHaveBody ?? true)
        {
            if (IsExpectContinue())
            {
                // The client waits for "100 Continue", which Kestrel sends on the first body read:
                // that read must be the application's, so this body is streamed.
                _bodyBuffered = false;
            }
            else if (!await BufferBodyAsync().ConfigureAwait(false))
            {
                return;
            }
        }
        _completion.Reset();
        _responseGate = ResponseGate.Open;
        _timedOut = false;
        workers.Dispatch(this);
        await new ValueTask(this, _completion.Version).ConfigureAwait(false);
        if (_timedOut)
        {
            await AnswerTimeoutAsync().ConfigureAwait(false);
            return;
        }
        if (_bodyTooSlow)
        {
            // A streamed body, which the application was reading (ReadBody).
            EndSlowBody();
            return;
        }
        if (_aborted)
        {
            if (_responseBodyBytes > 0)
            {
                // Kestrel's abort drops whatever its socket transport has not sent yet; the client
                // should still get the bytes that were flushed before the failure. Error path only,
                // and no thread waits.
                await Task.Delay(AbortGrace).ConfigureAwait(false);
            }
            _lifetime.Abort();
        }
        else if (_shortBody)
        {
            if (ClientDisconnected)
            {
                // Possibly before the head was committed, when Kestrel would answer 500 and keep the connection.
                _lifetime.Abort();
                return;
            }
            await FlushShortBodyAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Kestrel ends a response short of its Content-Length once this request returns: it resets an
    /// HTTP/2 stream, which drops the DATA not flushed yet, and closes an HTTP/1.1 connection. Flushed
    /// first, the head and every byte the application did send reach the client before that.
    /// </summary>
    private async Task FlushShortBodyAsync()
    {
        try
        {
            // Bounded: an HTTP/2 client can hold a flush forever by never opening its window.
            await _responseBody.Writer.FlushAsync().AsTask().WaitAsync(TimeSpan.FromMilliseconds(ResponseRateWindowMs)).ConfigureAwait(false);
            // A client may discard the DATA it has not read yet when the reset arrives (.NET's HttpClient
            // does): it gets a moment to read it, as an aborted response's bytes get (error path only).
            await Task.Delay(AbortGrace).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or IOException or OperationCanceledException or InvalidOperationException or ObjectDisposedException)
        {
            // Gone or stalled: the reset or close follows all the same.
        }
    }

    /// <summary>
    /// The watchdog took the response over before the application committed a head: send 504 and
    /// close. Kestrel must not finish this request (and reuse the exchange for the connection's
    /// next one) while the Python thread still holds it, so this waits for it to let go.
    /// </summary>
    private async Task AnswerTimeoutAsync()
    {
        try
        {
            _response.StatusCode = StatusCodes.Status504GatewayTimeout;
            _response.ReasonPhrase = "Gateway Timeout";
            IHeaderDictionary headers = _response.Headers;
            headers.ContentType = "text/html";
            CloseConnectionAfterResponse();
            headers.ContentLength = ResponseGate.TimeoutBody.Length;
            if (!HttpMethods.IsHead(_request.Method))
            {
                await _responseBody.Writer.WriteAsync(ResponseGate.TimeoutBody.ToArray()).ConfigureAwait(false);
            }
            await _responseBody.Writer.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            _lifetime.Abort();
        }
        await _released!.Task.ConfigureAwait(false);
    }

    /// <summary>
    /// The request ran past --timeout (watchdog thread). Before the application committed a
    /// head, Kestrel's side is resumed to answer 504; after, the connection is aborted
    /// (Kestrel's Abort is safe from any thread). The Python thread's later output is dropped.
    /// </summary>
    public TimeoutOutcome TryTimeOut()
    {
        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _released = released;
        TimeoutOutcome outcome = ResponseGate.ClaimForTimeout(ref _responseGate);
        if (outcome == TimeoutOutcome.Answered504)
        {
            _clientGone = true;
            _timedOut = true;
            if (!_bodyBuffered)
            {
                // A Python thread blocked reading a streamed body comes back with its end.
                _bodyPipe.Reader.CancelPendingRead();
            }
            _completion.SetResult(true);
        }
        else if (outcome == TimeoutOutcome.ConnectionClosed)
        {
            _clientGone = true;
            _lifetime.Abort();
        }
        return outcome;
    }

    /// <summary>An HTTP/1.x connection closes after this response; HTTP/2 has only the stream to end, and Kestrel drops (with a warning) a Connection header there.</summary>
    private void CloseConnectionAfterResponse()
    {
        if (_head.Version != Wsgi.HttpVersion.Http2)
        {
            _response.Headers.Connection = "close";
        }
    }

    /// <summary>Copies the request head; 0, or the status to refuse it with when Kestrel let through something the lean engine refuses.</summary>
    private int FillHead()
    {
        _head.Reset();
        _head.Method = _request.Method;
        _head.SetTarget(_request.RawTarget);
        _head.Version = _request.Protocol switch
        {
            "HTTP/1.0" => Wsgi.HttpVersion.Http10,
            "HTTP/2" => Wsgi.HttpVersion.Http2,
            _ => Wsgi.HttpVersion.Http11,
        };
        _head.Scheme = _request.Scheme;
        _head.RemoteAddress = _remoteAddress;
        _head.RemotePort = _connection?.RemotePort ?? 0;
        _head.LocalAddress = _localAddress;
        _head.LocalPort = _connection?.LocalPort ?? 0;
        int refusal = !IsTarget(_request.RawTarget) ? StatusCodes.Status400BadRequest
            // A 2xx answer to CONNECT opens a tunnel (RFC 9110 §9.3.6), which no WSGI application can give;
            // Kestrel would reset the connection after the application's answer.
            : HttpMethods.IsConnect(_request.Method) ? StatusCodes.Status501NotImplemented
            : 0;
        int fieldSizeLimit = _settings.MaxRequestFieldSize;
        int fields = 0;
        foreach (KeyValuePair<string, Microsoft.Extensions.Primitives.StringValues> header in _request.Headers)
        {
            foreach (string? value in header.Value)
            {
                fields++;
                string text = value ?? "";
                if (fieldSizeLimit > 0 && header.Key.Length + 2 + text.Length > fieldSizeLimit)
                {
                    refusal = StatusCodes.Status431RequestHeaderFieldsTooLarge;
                }
                else if (refusal == 0 && (!HttpToken.IsToken(header.Key) || !IsFieldValue(text)))
                {
                    refusal = StatusCodes.Status400BadRequest;
                }
                _head.AddHeader(header.Key, text);
            }
        }
        // The request line and header count limits, counted as in HTTP/1.1 for HTTP/2 too (Kestrel's
        // own bounds are raised where HTTP/2 is served: KestrelEngine). Pseudo-header fields are not
        // in the headers; :authority is, as Host.
        if (_settings.MaxRequestLine > 0 && _request.Method.Length + _request.RawTarget.Length + RequestLineExtra > _settings.MaxRequestLine)
        {
            return StatusCodes.Status414UriTooLong;
        }
        if (_settings.MaxRequestHeaders > 0 && fields > _settings.MaxRequestHeaders)
        {
            return StatusCodes.Status431RequestHeaderFieldsTooLarge;
        }
        return refusal != 0 ? refusal : CheckFraming();
    }

    /// <summary>What an HTTP/1.1 request line holds besides method and target: two spaces and "HTTP/1.1".</summary>
    private const int RequestLineExtra = 10;

    /// <summary>
    /// RFC 9112 §6.3 as the lean engine applies it: Kestrel resolves some ambiguities itself
    /// (Content-Length beside Transfer-Encoding, a coding list ending in chunked), but a proxy in
    /// front may have resolved them differently, which is how requests get smuggled. Refuse them.
    /// </summary>
    private int CheckFraming()
    {
        IHeaderDictionary headers = _request.Headers;
        if (_head.Version == Wsgi.HttpVersion.Http2 &&
            (headers.TransferEncoding.Count > 0 || headers.Upgrade.Count > 0 || headers.KeepAlive.Count > 0 ||
             headers.Connection.Count > 0 || headers.ContainsKey("Proxy-Connection")))
        {
            // RFC 9113 §8.2.2: connection-specific fields make an HTTP/2 request malformed. Kestrel
            // refuses only Connection (and TE other than trailers); a Transfer-Encoding: chunked
            // would reach the application with its body still in chunked framing.
            return StatusCodes.Status400BadRequest;
        }
        bool http11 = _head.Version != Wsgi.HttpVersion.Http10;
        int hosts = headers.Host.Count;
        if (http11 ? hosts != 1 : hosts > 1)
        {
            return StatusCodes.Status400BadRequest;
        }
        Microsoft.Extensions.Primitives.StringValues transferEncoding = headers.TransferEncoding;
        Microsoft.Extensions.Primitives.StringValues contentLength = headers.ContentLength.HasValue
            ? new Microsoft.Extensions.Primitives.StringValues("x")
            : headers["Content-Length"];
        if (transferEncoding.Count > 0)
        {
            // Kestrel hides a Content-Length sent beside Transfer-Encoding by renaming it
            // X-Content-Length; a client sending that name itself with a chunked body is refused too.
            if (!http11 || contentLength.Count > 0 || headers.ContainsKey("X-Content-Length") || transferEncoding.Count > 1 ||
                !string.Equals(transferEncoding[0], "chunked", StringComparison.OrdinalIgnoreCase))
            {
                return StatusCodes.Status400BadRequest;
            }
        }
        return 0;
    }

    private static bool IsTarget(string target)
    {
        foreach (char c in target)
        {
            if (c <= 0x20 || c == 0x7F)
            {
                return false;
            }
        }
        return target.Length > 0;
    }

    private static bool IsFieldValue(string value)
    {
        foreach (char c in value)
        {
            if ((c < 0x20 && c != '\t') || c == 0x7F)
            {
                return false;
            }
        }
        return true;
    }

    private bool IsExpectContinue() =>
        _request.Headers.TryGetValue("Expect", out Microsoft.Extensions.Primitives.StringValues expect) &&
        string.Equals(expect.ToString(), "100-continue", StringComparison.OrdinalIgnoreCase);

    /// <summary>Receives the whole body before the application is called; false if the request is already answered.</summary>
    private async ValueTask<bool> BufferBodyAsync()
    {
        _body.Expect(_request.Headers.ContentLength ?? -1);
        PipeReader reader = _bodyPipe.Reader;
        try
        {
            while (true)
            {
                ReadResult result = await ReadBodyAsync(reader).ConfigureAwait(false);
                if (_bodyTooSlow)
                {
                    EndSlowBody();
                    return false;
                }
                _bodyBytesRead += result.Buffer.Length;
                if (_bodyBytesRead > _decodedBodyLimit)
                {
                    _response.StatusCode = StatusCodes.Status413PayloadTooLarge;
                    CloseConnectionAfterResponse();
                    reader.AdvanceTo(result.Buffer.End);
                    return false;
                }
                foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                {
                    _body.Append(segment.Span);
                }
                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    return true;
                }
            }
        }
        catch (BadHttpRequestException e)
        {
            // Kestrel answers 400/413 itself once we return; the application never sees the request.
            _response.StatusCode = e.StatusCode;
            CloseConnectionAfterResponse();
            return false;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            // A reset client is gone and hears nothing; anything else is a body Kestrel could not
            // decode (it reports an overflowing chunk size as a bare IOException): 400, not the
            // empty 200 that returning alone would produce.
            _response.StatusCode = StatusCodes.Status400BadRequest;
            CloseConnectionAfterResponse();
            return false;
        }
    }

    /// <summary>
    /// A read of the request body. An HTTP/2 stream is held to --min-request-body-rate as Kestrel
    /// holds an HTTP/1.1 request: past the grace period, the bytes received must keep up with the
    /// rate over the time spent waiting for them. A read still waiting when the client falls below
    /// it is cancelled, and <see cref="_bodyTooSlow"/> set.
    /// </summary>
    private ValueTask<ReadResult> ReadBodyAsync(PipeReader reader)
    {
        if (!_timeBodyRate)
        {
            return reader.ReadAsync();
        }
        // Bytes already here cost no wait and no timer.
        return reader.TryRead(out ReadResult ready) ? new ValueTask<ReadResult>(ready) : ReadWithinRateAsync(reader);
    }

    private async ValueTask<ReadResult> ReadWithinRateAsync(PipeReader reader)
    {
        long rate = _settings.MinRequestBodyRate;
        // The wait after which, with no more bytes, the received ones fall short of the rate.
        long failsAfterMs = Math.Max((long)HttpSettings.BodyRateGracePeriod.TotalMilliseconds, _bodyBytesRead * 1000 / rate) + 1;
        CancellationTokenSource deadline = _bodyDeadline is { } reusable && reusable.TryReset() ? reusable : (_bodyDeadline = new CancellationTokenSource());
        deadline.CancelAfter(TimeSpan.FromMilliseconds(Math.Max(failsAfterMs - _bodyWaitMs, 1)));
        long started = Environment.TickCount64;
        try
        {
            return await reader.ReadAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            _bodyTooSlow = true;
            return default;
        }
        finally
        {
            deadline.CancelAfter(Timeout.Infinite);
            _bodyWaitMs += Environment.TickCount64 - started;
        }
    }

    /// <summary>An HTTP/2 body fell below --min-request-body-rate: 408 if no head has gone out, else a reset; either way only this stream ends.</summary>
    private void EndSlowBody()
    {
        bool answered = !_response.HasStarted;
        if (answered)
        {
            _response.StatusCode = StatusCodes.Status408RequestTimeout;
        }
        else
        {
            _lifetime.Abort();
        }
        Log.Warning($"{_remoteAddress}: {_request.Method} {_request.RawTarget}: the request body came slower than {_settings.MinRequestBodyRate} bytes/s; {(answered ? "408, HTTP/2 stream ended" : "HTTP/2 stream reset")}");
    }

    public int ReadBody(Span<byte> destination)
    {
        if (_bodyBuffered)
        {
            return _body.Read(destination);
        }
        if (_clientGone)
        {
            return 0;
        }
        // Streaming (Expect: 100-continue): called on a Python thread with the GIL released, so
        // blocking here costs neither a Kestrel thread nor other Python threads.
        PipeReader reader = _bodyPipe.Reader;
        try
        {
            ValueTask<ReadResult> pending = ReadBodyAsync(reader);
            ReadResult result = pending.IsCompletedSuccessfully ? pending.Result : pending.AsTask().GetAwaiter().GetResult();
            if (_bodyTooSlow)
            {
                // Unless the application's head went out already, the 408 (ProcessAsync) is this
                // stream's response: its head will find the gate taken and be dropped.
                Interlocked.CompareExchange(ref _responseGate, ResponseGate.Started, ResponseGate.Open);
                _clientGone = true;
                return 0;
            }
            ReadOnlySequence<byte> buffer = result.Buffer;
            int n = (int)Math.Min(buffer.Length, destination.Length);
            buffer.Slice(0, n).CopyTo(destination);
            reader.AdvanceTo(buffer.GetPosition(n));
            _bodyBytesRead += n;
            if (_bodyBytesRead > _decodedBodyLimit)
            {
                // Too late for a 413 (the application is running): the body ends here and the connection with it.
                _clientGone = true;
                return 0;
            }
            return n;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException or InvalidOperationException)
        {
            _clientGone = true;
            return 0;
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
        try
        {
            WriteHeadToKestrel(head);
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            // OperationCanceledException: Kestrel's ConnectionAbortedException, after a timeout aborted the connection.
            _clientGone = true;
        }
    }

    private void WriteHeadToKestrel(ResponseHead head)
    {
        _response.StatusCode = head.StatusCode;
        _response.ReasonPhrase = Encoding.Latin1.GetString(head.Reason);
        IHeaderDictionary headers = _response.Headers;
        for (int i = 0; i < head.HeaderCount; i++)
        {
            string name = KnownHeaderNames.Get(head.HeaderName(i));
            string value = Encoding.Latin1.GetString(head.HeaderValue(i));
            // Not IHeaderDictionary.Append: it removes a header whose only value is "" (ASP.NET Core's
            // ParsingHelpers.SetHeaderUnmodified), and RFC 9110 allows empty values. Kestrel writes
            // any non-null value, on HTTP/1.1 and HTTP/2.
            headers[name] = headers.TryGetValue(name, out Microsoft.Extensions.Primitives.StringValues existing)
                ? Microsoft.Extensions.Primitives.StringValues.Concat(existing, value)
                : new Microsoft.Extensions.Primitives.StringValues(value);
        }
        if ((_settings.KeepAlive == TimeSpan.Zero || _stopNotice.Given) && _head.Version != Wsgi.HttpVersion.Http2)
        {
            // --keep-alive 0 closes after every response: Kestrel's own idle timeout would leave
            // the connection open (and reusable) until its next heartbeat. A stopping engine says so
            // in each response rather than closing a connection its client may be reusing.
            headers.Connection = "close";
        }
        // Commits the head (unflushed) so the body writer hands out real buffers; it completes
        // synchronously because nothing registers OnStarting callbacks.
        _responseBody.StartAsync().GetAwaiter().GetResult();
    }

    public bool WriteBody(ReadOnlySpan<byte> data, bool flush)
    {
        if (ClientDisconnected)
        {
            return true;
        }
        try
        {
            PipeWriter writer = _responseBody.Writer;
            _responseBodyBytes += data.Length;
            if (_head.Version != Wsgi.HttpVersion.Http2)
            {
                return Stage(data, flush);
            }
            if (data.Length > StreamPiece)
            {
                return WriteInPieces(writer, data);
            }
            writer.Write(data);
            _unflushedBytes += data.Length;
            if (!flush && _unflushedBytes < StreamPiece)
            {
                return true;
            }
            long bytes = _unflushedBytes;
            _unflushedBytes = 0;
            return Flush(writer, bytes);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            // Kestrel refuses writes once it has aborted the connection.
            _clientGone = true;
            return true;
        }
    }

    /// <summary>
    /// HTTP/1.x: gathers <paramref name="data"/> in the stage, handing each full stage (and the rest,
    /// when <paramref name="flush"/>) to Kestrel; when a flush is pending, what is left is held for
    /// <see cref="WaitForDrain"/>.
    /// </summary>
    private bool Stage(ReadOnlySpan<byte> data, bool flush)
    {
        byte[] stage = RentStage();
        while (!data.IsEmpty)
        {
            int n = Math.Min(StageSize - _staged, data.Length);
            data[..n].CopyTo(stage.AsSpan(_staged));
            _staged += n;
            data = data[n..];
            if (_staged == StageSize && !SendStaged())
            {
                Hold(data);
                return false;
            }
        }
        return !flush || SendStaged();
    }

    private byte[] RentStage() => _stage ??= ArrayPool<byte>.Shared.Rent(StageSize);

    /// <summary>Gives the staged bytes to Kestrel; false while their flush is pending.</summary>
    private bool SendStaged()
    {
        if (_staged == 0)
        {
            return true;
        }
        int bytes = _staged;
        _staged = 0;
        return Send(_stage.AsMemory(0, bytes));
    }

    /// <summary>HTTP/1.x: gives <paramref name="bytes"/> to Kestrel, which copies them into its pipe at once (so the memory may be reused); false while their flush is pending.</summary>
    private bool Send(ReadOnlyMemory<byte> bytes) => Track(_responseBody.Writer.WriteAsync(bytes), bytes.Length);

    private void Hold(ReadOnlySpan<byte> data)
    {
        if (!data.IsEmpty)
        {
            _held = ArrayPool<byte>.Shared.Rent(data.Length);
            data.CopyTo(_held);
            _heldOffset = 0;
            _heldCount = data.Length;
        }
    }

    /// <summary>
    /// Flushes <paramref name="data"/> piece by piece while the flushes complete at once; when one
    /// is pending, the rest is held for <see cref="WaitForDrain"/> to send as the client takes it.
    /// </summary>
    private bool WriteInPieces(PipeWriter writer, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = Math.Min(StreamPiece, data.Length);
            writer.Write(data[..n]);
            data = data[n..];
            long bytes = _unflushedBytes + n;
            _unflushedBytes = 0;
            if (!Flush(writer, bytes))
            {
                Hold(data);
                return false;
            }
            if (ClientDisconnected)
            {
                break;
            }
        }
        return true;
    }

    /// <summary>Sends held bytes piece by piece until a flush is pending or none are left.</summary>
    private void WriteHeld()
    {
        try
        {
            PipeWriter writer = _responseBody.Writer;
            bool http2 = _head.Version == Wsgi.HttpVersion.Http2;
            while (_heldCount > 0 && !ClientDisconnected)
            {
                int n = Math.Min(http2 ? StreamPiece : StageSize, _heldCount);
                bool flushed;
                if (http2)
                {
                    writer.Write(_held.AsSpan(_heldOffset, n));
                    flushed = Flush(writer, n);
                }
                else
                {
                    flushed = Send(_held.AsMemory(_heldOffset, n));
                }
                _heldOffset += n;
                _heldCount -= n;
                if (!flushed)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            _clientGone = true;
        }
        ReleaseHeld();
    }

    private void ReleaseHeld()
    {
        if (_held is not null)
        {
            ArrayPool<byte>.Shared.Return(_held);
            _held = null;
            _heldCount = 0;
        }
    }

    private bool Flush(PipeWriter writer, long bytes) => Track(writer.FlushAsync(), bytes);

    /// <summary>True when <paramref name="flush"/> is done; otherwise it is the pending flush, of <paramref name="bytes"/>.</summary>
    private bool Track(ValueTask<FlushResult> flush, long bytes)
    {
        if (flush.IsCompletedSuccessfully)
        {
            FlushResult result = flush.Result;
            _clientGone |= result.IsCanceled || result.IsCompleted;
            return true;
        }
        _pendingFlush = flush.AsTask();
        _pendingFlushBytes = bytes;
        return false;
    }

    public bool WaitForDrain()
    {
        if (_pendingFlush is null)
        {
            return !ClientDisconnected;
        }
        // What the client takes is measured per window, as the lean engine measures it. For an HTTP/2
        // stream, by completed flushes: one completes once Kestrel has sent all of it, and Kestrel does
        // not time a stream stalled by its flow-control window. For HTTP/1.x, by the bytes the client's
        // TCP acknowledged: a flush completes only once the connection's whole output buffer (up to
        // 1 MB) has drained, far too coarse a measure. Without a TCP socket, Kestrel's own
        // MinResponseDataRate is the only check.
        bool http2 = _head.Version == Wsgi.HttpVersion.Http2;
        long acked = http2 ? 0 : BytesAcked();
        bool timed = http2 || acked >= 0;
        long windowStarted = Environment.TickCount64;
        long windowBytes = 0;
        while (_pendingFlush is not null)
        {
            if (timed && !Completes(_pendingFlush, windowStarted + ResponseRateWindowMs - Environment.TickCount64))
            {
                if (!KeepsUp(ref windowStarted, ref windowBytes, ref acked))
                {
                    break;
                }
                continue;
            }
            EndFlush();
            windowBytes += _pendingFlushBytes;
            if (ClientDisconnected)
            {
                break;
            }
            WriteHeld();
            if (timed && Environment.TickCount64 - windowStarted >= ResponseRateWindowMs && !KeepsUp(ref windowStarted, ref windowBytes, ref acked))
            {
                break;
            }
        }
        if (ClientDisconnected)
        {
            ReleaseHeld();
        }
        return !ClientDisconnected;
    }

    /// <summary>Whether the window that just ended saw the client take enough; if not, its stream is reset or its connection closed.</summary>
    private bool KeepsUp(ref long windowStarted, ref long windowBytes, ref long acked)
    {
        long window = Environment.TickCount64 - windowStarted;
        bool http2 = _head.Version == Wsgi.HttpVersion.Http2;
        long ackedNow = http2 ? 0 : BytesAcked();
        // A socket that can no longer be asked (closed under us) is Kestrel's to time.
        long taken = http2 ? windowBytes : ackedNow < 0 ? long.MaxValue : ackedNow - acked;
        if (taken * 1000 < MinResponseBytesPerSecond * window)
        {
            // Too slow a reader to be worth a Python thread. Aborting an HTTP/2 request resets only
            // its stream; the pending flush is left to complete when Kestrel lets go of the stream.
            _clientGone = true;
            _pendingFlush = null;
            Log.Warning($"{_remoteAddress}: {_request.Method} {_request.RawTarget}: the client read the response slower than {MinResponseBytesPerSecond} bytes/s; {(http2 ? "HTTP/2 stream reset" : "closing the connection")}");
            _lifetime.Abort();
            return false;
        }
        windowStarted += window;
        windowBytes = 0;
        acked = ackedNow;
        return true;
    }

    /// <summary>tcp_info's tcpi_bytes_acked (Linux 4.1 on): what the peer has received of the connection; -1 when it cannot be read.</summary>
    private long BytesAcked()
    {
        const int SolTcp = 6;
        const int TcpInfo = 11;
        const int BytesAckedOffset = 120;
        if (_socket is null)
        {
            return -1;
        }
        Span<byte> info = stackalloc byte[256];
        try
        {
            int length = _socket.GetRawSocketOption(SolTcp, TcpInfo, info);
            return length >= BytesAckedOffset + 8 ? BinaryPrimitives.ReadInt64LittleEndian(info[BytesAckedOffset..]) : -1;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return -1;
        }
    }

    /// <summary>Waits up to <paramref name="milliseconds"/> for a flush; true once it is over, however it ended.</summary>
    private static bool Completes(Task<FlushResult> flush, long milliseconds)
    {
        try
        {
            return flush.Wait((int)Math.Clamp(milliseconds, 0, ResponseRateWindowMs));
        }
        catch (AggregateException)
        {
            // Faulted or canceled: EndFlush reads how.
            return true;
        }
    }

    private void EndFlush()
    {
        try
        {
            FlushResult result = _pendingFlush!.GetAwaiter().GetResult();
            _clientGone |= result.IsCanceled || result.IsCompleted;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException)
        {
            _clientGone = true;
        }
        _pendingFlush = null;
    }

    public bool SendFile(SafeFileHandle file, long offset, long count)
    {
        // Kestrel has no sendfile path; this reads through the page cache into its pipe.
        if (ClientDisconnected)
        {
            return false;
        }
        try
        {
            return CopyFile(file, offset, count);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or ObjectDisposedException or OperationCanceledException)
        {
            _clientGone = true;
            return false;
        }
    }

    private bool CopyFile(SafeFileHandle file, long offset, long count)
    {
        PipeWriter writer = _responseBody.Writer;
        bool http2 = _head.Version == Wsgi.HttpVersion.Http2;
        // HTTP/1.x goes through the stage, whose bytes Kestrel counts; what the application wrote before is sent first.
        if (!http2 && !SendStaged() && !WaitForDrain())
        {
            return false;
        }
        while (count > 0)
        {
            // HTTP/2 flushes are kept small: their completions are how WaitForDrain times the client.
            Span<byte> span = http2 ? writer.GetSpan(StreamPiece) : RentStage();
            int want = (int)Math.Min(Math.Min(span.Length, http2 ? StreamPiece : StageSize), count);
            int read = RandomAccess.Read(file, span[..want], offset);
            if (read <= 0)
            {
                // The file shrank after its size was taken: the bytes promised (a Content-Length, or
                // the chunks a last chunk would vouch for) do not exist, so the response is cut, not ended.
                Log.Warning($"{_remoteAddress}: {_request.Method} {_request.RawTarget}: the file shrank while it was sent, {count} bytes short; {(http2 ? "resetting the stream" : "closing the connection")}");
                return false;
            }
            _responseBodyBytes += read;
            offset += read;
            count -= read;
            bool flushed;
            if (http2)
            {
                writer.Advance(read);
                long bytes = _unflushedBytes + read;
                _unflushedBytes = 0;
                flushed = Flush(writer, bytes);
            }
            else
            {
                _staged = read;
                flushed = SendStaged();
            }
            if (!flushed && !WaitForDrain())
            {
                return false;
            }
            if (ClientDisconnected)
            {
                return false;
            }
        }
        return true;
    }

    public void Complete(bool closeConnection)
    {
        if (ReleasedAfterTimeout())
        {
            return;
        }
        if (_staged > 0 && !ClientDisconnected)
        {
            // The rest of the body, counted as the rest was (of a short one too: its bytes go out before
            // the close); Kestrel ends the response after its flush.
            try
            {
                SendStaged();
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException or ObjectDisposedException or IOException or OperationCanceledException)
            {
                _clientGone = true;
            }
        }
        // Kestrel sees the short body itself (ProcessAsync flushes what there is first): having
        // committed the head, it counts the shortfall as an error after the response started and
        // ends the connection (HTTP/1.1) or the stream (HTTP/2), even when no body byte was written.
        _shortBody = closeConnection;
        _completion.SetResult(true);
    }

    public void Abort()
    {
        if (ReleasedAfterTimeout())
        {
            return;
        }
        _aborted = true;
        _completion.SetResult(false);
    }

    /// <summary>Marks the exchange complete; true when the watchdog had answered 504 and Kestrel's side is now let go.</summary>
    private bool ReleasedAfterTimeout()
    {
        if (Interlocked.Exchange(ref _responseGate, ResponseGate.Completed) != ResponseGate.Answered504)
        {
            return false;
        }
        _released!.SetResult();
        return true;
    }

    /// <summary>Kestrel calls this (through DisposeContext) after every request, so each request starts clean.</summary>
    public void Reset()
    {
        _body.Reset();
        _pendingFlush = null;
        ReleaseHeld();
        _staged = 0;
        if (_stage is not null)
        {
            // Not kept by an idle keep-alive connection.
            ArrayPool<byte>.Shared.Return(_stage);
            _stage = null;
        }
    }

    private static string FormatAddress(IPAddress? address) => address switch
    {
        null => "",
        { IsIPv4MappedToIPv6: true } => address.MapToIPv4().ToString(),
        _ => address.ToString(),
    };

    void IValueTaskSource.GetResult(short token) => _completion.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _completion.GetStatus(token);
    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _completion.OnCompleted(continuation, state, token, flags);
}
