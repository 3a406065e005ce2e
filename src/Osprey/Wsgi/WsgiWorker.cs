using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>
/// Runs requests on one Python thread: builds environ, calls the application, validates what it
/// gives start_response, and frames the response (PEP 3333). One instance per Python thread,
/// reused from request to request. Every method runs with the GIL held unless it says otherwise.
/// </summary>
internal sealed class WsgiWorker(WsgiApplication application, RequestSlot? slot)
{
    private static readonly byte[] s_errorBody =
        "<html><head><title>Internal Server Error</title></head><body><h1><p>Internal Server Error</p></h1></body></html>"u8.ToArray();

    private readonly ResponseHead _head = new();
    private IHttpExchange? _exchange;
    private int _generation;
    private bool _statusSet;
    private bool _headersSent;
    private bool _finished;
    private bool _isHead;
    private bool _bodyForbidden;
    private bool _truncatedWarned;
    private long _bodyBytesSent;
    private long _startTimestamp;
    private StringBuilder? _accessLine;
    // Separate buffers: a header's name and value are both in use at once when either is non-ASCII.
    private byte[]? _latin1Scratch;
    private byte[]? _nameScratch;
    private byte[]? _valueScratch;
    // The C# side of the per-request Python objects, taken back when Python frees them: a request
    // allocates none. One whose Python object the application kept is never recycled, so it keeps
    // its old generation and goes on refusing calls.
    private StartResponseObject? _spareStartResponse;
    private WriteObject? _spareWrite;
    private InputStreamObject? _spareInput;
    private ReusedObject<InputStreamObject> _input;
    private ReusedObject<StartResponseObject> _startResponse;
    private ReusedObject<WriteObject> _write;

    private IHttpExchange Exchange => _exchange ?? throw new InvalidOperationException("no request in progress");

    public void Handle(IHttpExchange exchange)
    {
        _exchange = exchange;
        if (Log.AccessLogEnabled || Statsd.Current is not null)
        {
            // Only the access log's request times (T, M, D, L) and the StatsD duration read it.
            _startTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        _generation++;
        _head.Reset();
        _statusSet = _headersSent = _finished = _truncatedWarned = false;
        _bodyBytesSent = 0;
        _isHead = exchange.Request.Method == "HEAD";
        _bodyForbidden = false;
        slot?.Begin(exchange);

        PyRef result = default;
        // The configuration's pre_request/post_request hooks, when it has them: their request object, and
        // the environ, kept for post_request.
        PyRef hookRequest = default;
        PyRef hookEnviron = default;
        try
        {
            if (!application.RequestBegin.IsNull)
            {
                hookRequest = BeginRequestHooks(exchange.Request);
            }
            using (PyRef input = _input.Take(this, application.Types.Input, static w => w.TakeInput(), _generation))
            using (PyRef environ = application.Environ.Build(exchange.Request, input.Borrow()))
            using (PyRef startResponse = _startResponse.Take(this, application.Types.StartResponse, static w => w.TakeStartResponse(), _generation))
            using (PyRef args = Py.Tuple(environ.Borrow(), startResponse.Borrow()))
            {
                if (!hookRequest.IsNull && !application.RequestEnd.IsNull)
                {
                    hookEnviron = environ.Borrow().NewRef();
                }
                result = application.Callable.Call(args.Borrow());
            }
            SendResult(result.Borrow());
        }
        catch (PythonException e)
        {
            Fail($"Error handling request {DescribeRequest()}\n{e.Traceback}");
            e.ReleaseObjects();
        }
        catch (ResponseException e)
        {
            Fail($"Error handling request {DescribeRequest()}: {e.Message}");
        }
        catch (ClientGoneException)
        {
            Finish(ResponseEnd.Aborted);
        }
        finally
        {
            if (!result.IsNull)
            {
                CloseIterable(result.Borrow());
                result.Dispose();
            }
            if (!_finished)
            {
                Finish(ResponseEnd.Aborted);
            }
            if (!hookRequest.IsNull)
            {
                if (!application.RequestEnd.IsNull)
                {
                    EndRequestHooks(hookRequest.Borrow(), hookEnviron.IsNull ? Py.None : hookEnviron.Borrow());
                }
                hookRequest.Dispose();
                hookEnviron.Dispose();
            }
            // Objects the application kept refuse further use from here on.
            _generation++;
            _exchange = null;
        }
    }

    /// <summary>Calls the configuration's pre_request(worker, req) with gunicorn's view of the request; returns req.</summary>
    private PyRef BeginRequestHooks(RequestHead request)
    {
        using PyRef method = Py.Str(request.Method);
        using PyRef uri = Py.StrLatin1(request.Target);
        using PyRef major = Py.Int(request.Version == HttpVersion.Http2 ? 2 : 1);
        using PyRef minor = Py.Int(request.Version == HttpVersion.Http11 ? 1 : 0);
        using PyRef version = Py.Tuple(major.Borrow(), minor.Borrow());
        using PyRef headers = Py.List();
        for (int i = 0; i < request.HeaderCount; i++)
        {
            // gunicorn's names are upper case.
            using PyRef name = Py.Str(Encoding.Latin1.GetString(request.HeaderName(i)).ToUpperInvariant());
            using PyRef value = Py.StrLatin1(request.HeaderValue(i));
            using PyRef header = Py.Tuple(name.Borrow(), value.Borrow());
            Py.Append(headers.Borrow(), header.Borrow());
        }
        using PyRef scheme = Py.Str(request.Scheme);
        using PyRef host = Py.Str(request.RemoteAddress);
        using PyRef port = Py.Int(request.RemotePort);
        using PyRef peer = Py.Tuple(host.Borrow(), port.Borrow());
        using PyRef args = Py.Tuple(method.Borrow(), uri.Borrow(), version.Borrow(), headers.Borrow(), scheme.Borrow(), peer.Borrow());
        return application.RequestBegin.Call(args.Borrow());
    }

    /// <summary>Calls the configuration's post_request(worker, req, environ, resp) once the response is over.</summary>
    private void EndRequestHooks(PyBorrowed request, PyBorrowed environ)
    {
        try
        {
            using PyRef status = Py.Str(string.Create(CultureInfo.InvariantCulture, $"{_head.StatusCode} {Encoding.Latin1.GetString(_head.Reason)}"));
            using PyRef headers = Py.List();
            for (int i = 0; i < _head.HeaderCount; i++)
            {
                using PyRef name = Py.StrLatin1(_head.HeaderName(i));
                using PyRef value = Py.StrLatin1(_head.HeaderValue(i));
                using PyRef header = Py.Tuple(name.Borrow(), value.Borrow());
                Py.Append(headers.Borrow(), header.Borrow());
            }
            using PyRef sent = Py.Int(_bodyBytesSent);
            using PyRef args = Py.Tuple(request, environ, status.Borrow(), headers.Borrow(), sent.Borrow());
            using PyRef result = application.RequestEnd.Call(args.Borrow());
        }
        catch (PythonException e)
        {
            // The hook's own exceptions are logged in Python; this is a failure to call it at all.
            e.ReleaseObjects();
            Log.Error($"Exception in post_request hook\n{e.Traceback}");
        }
    }

    public void CheckCurrent(int generation, string what)
    {
        if (generation != _generation || _exchange is null)
        {
            throw new PythonErrorException(Py.RuntimeError, $"{what} used after its request completed");
        }
    }

    /// <summary>Bytes of the request body not read yet, when the whole body is buffered; -1 when it is streamed.</summary>
    public long BufferedBodyRemaining => Exchange.BufferedBodyRemaining;

    /// <summary>Reads request body bytes for wsgi.input, letting other Python threads run if the client must be waited for.</summary>
    public int ReadBody(Span<byte> destination)
    {
        IHttpExchange exchange = Exchange;
        if (exchange.BodyIsBuffered)
        {
            return exchange.ReadBody(destination);
        }
        using (Gil.Release())
        {
            return exchange.ReadBody(destination);
        }
    }

    public PyRef StartResponse(PyBorrowed status, PyBorrowed headers, PyBorrowed excInfo)
    {
        if (!excInfo.IsNull && !excInfo.IsNone)
        {
            if (_headersSent)
            {
                // PEP 3333: once headers are out, start_response with exc_info re-raises it.
                if (!excInfo.IsTuple || excInfo.TupleSize != 3 || !Py.RaiseException(excInfo.TupleItem(1)))
                {
                    throw new PythonErrorException(Py.TypeError,
                        "exc_info must be the (type, value, traceback) of an exception, as sys.exc_info() gives in an except block");
                }
                throw PythonException.Fetch();
            }
        }
        else if (_statusSet)
        {
            throw new PythonErrorException(Py.AssertionError, "start_response() called again without exc_info");
        }

        _head.Reset();
        ParseStatus(status);
        if (!headers.IsList)
        {
            throw new PythonErrorException(Py.TypeError, $"response headers must be a list, not {headers.TypeName()}");
        }
        // RFC 9110 §15.3.5, §15.3.6, §15.4.5: these responses have no content, whatever the
        // application returns (Kestrel would refuse the response over it).
        int code = _head.StatusCode;
        _bodyForbidden = code is (>= 100 and < 200) or 204 or 205 or 304;
        nint count = headers.ListSize;
        for (nint i = 0; i < count; i++)
        {
            AddHeader(headers.ListItem(i));
        }
        _statusSet = true;
        return _write.Take(this, application.Types.Write, static w => w.TakeWrite(), _generation);
    }

    /// <summary>
    /// One of the per-request Python objects, kept from one request to the next and rebound when
    /// nothing else refers to it (a reference count of 1, ours): then a request allocates no Python
    /// object of ours and no GCHandle. One the application still holds is let go instead, and goes
    /// on refusing calls with its old generation.
    /// </summary>
    private struct ReusedObject<T> where T : NativeObject, IRequestBound
    {
        private PyRef _object;
        private T? _target;

        public PyRef Take(WsgiWorker worker, NativeType type, Func<WsgiWorker, T> fresh, int generation)
        {
            if (_object.IsNull || _object.Borrow().RefCount != 1)
            {
                _object.Dispose();
                _target = fresh(worker);
                _object = type.Instantiate(_target);
            }
            _target!.Bind(generation);
            return _object.Borrow().NewRef();
        }
    }

    // Take and Recycle run with the GIL held (Recycle from the Python object's deallocator, on
    // whichever thread frees it), so the GIL is what serialises them.
    private InputStreamObject TakeInput()
    {
        InputStreamObject input = _spareInput ?? new InputStreamObject(this);
        _spareInput = null;
        return input;
    }

    private StartResponseObject TakeStartResponse()
    {
        StartResponseObject startResponse = _spareStartResponse ?? new StartResponseObject(this);
        _spareStartResponse = null;
        return startResponse;
    }

    private WriteObject TakeWrite()
    {
        WriteObject write = _spareWrite ?? new WriteObject(this);
        _spareWrite = null;
        return write;
    }

    public void Recycle(InputStreamObject input) => _spareInput = input;

    public void Recycle(StartResponseObject startResponse) => _spareStartResponse = startResponse;

    public void Recycle(WriteObject write) => _spareWrite = write;

    private void ParseStatus(PyBorrowed status)
    {
        if (!status.IsStr)
        {
            throw new PythonErrorException(Py.TypeError, $"status must be a str, not {status.TypeName()}");
        }
        if (!status.TryGetLatin1(ref _latin1Scratch, out ReadOnlySpan<byte> text))
        {
            throw new PythonErrorException(Py.ValueError, "status must be encodable as latin-1");
        }
        if (text.Length < 4 || !IsDigit(text[0]) || !IsDigit(text[1]) || !IsDigit(text[2]) || text[3] != ' ' || text[0] == '0')
        {
            throw new PythonErrorException(Py.ValueError, $"status must be 'NNN reason', got {status.Repr()}");
        }
        ReadOnlySpan<byte> reason = text[4..];
        if (ContainsControl(reason))
        {
            throw new PythonErrorException(Py.ValueError, "status must not contain control characters such as CR or LF");
        }
        _head.SetStatus((text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0'), reason);
    }

    private void AddHeader(PyBorrowed item)
    {
        if (!item.IsTuple || item.TupleSize != 2)
        {
            throw new PythonErrorException(Py.TypeError, $"each response header must be a (name, value) tuple, got {item.Repr()}");
        }
        PyBorrowed name = item.TupleItem(0);
        PyBorrowed value = item.TupleItem(1);
        if (!name.IsStr || !value.IsStr)
        {
            throw new PythonErrorException(Py.TypeError, $"response header names and values must be str, got {item.Repr()}");
        }
        if (!name.TryGetLatin1(ref _nameScratch, out ReadOnlySpan<byte> nameBytes) || !HttpToken.IsToken(nameBytes))
        {
            throw new PythonErrorException(Py.ValueError, $"invalid response header name {name.Repr()}");
        }
        if (IsHopByHop(nameBytes))
        {
            throw new PythonErrorException(Py.ValueError, $"hop-by-hop header {name.Repr()} is not allowed in a WSGI response");
        }
        if (!value.TryGetLatin1(ref _valueScratch, out ReadOnlySpan<byte> valueBytes))
        {
            throw new PythonErrorException(Py.ValueError, $"response header value {value.Repr()} is not latin-1");
        }
        // Leading and trailing whitespace is not part of a field value (RFC 9110 §5.5); Django's
        // cookie headers start with a space, which gunicorn strips too.
        valueBytes = valueBytes.Trim(" \t"u8);
        if (ContainsControl(valueBytes))
        {
            throw new PythonErrorException(Py.ValueError, $"response header value {value.Repr()} contains a control character (CR, LF or NUL)");
        }
        if (Ascii.EqualsIgnoreCase(nameBytes, "content-length"u8))
        {
            // Digits only (RFC 9110 §8.6): "+5" or "-0" would go out as the application wrote them.
            if (valueBytes.IsEmpty || valueBytes.IndexOfAnyExceptInRange((byte)'0', (byte)'9') >= 0 ||
                !Utf8Parser.TryParse(valueBytes, out long length, out int consumed) || consumed != valueBytes.Length)
            {
                throw new PythonErrorException(Py.ValueError, $"invalid Content-Length {value.Repr()}");
            }
            if (_head.ContentLength >= 0)
            {
                // Two lengths would frame the response two ways (RFC 9112 §6.3): a proxy that
                // trusts the other one reads part of the body as the next response.
                if (length != _head.ContentLength)
                {
                    throw new PythonErrorException(Py.ValueError, $"conflicting Content-Length headers: {_head.ContentLength} and {length}");
                }
                return;
            }
            if (_head.StatusCode is (>= 100 and < 200) or 204 or 205)
            {
                // Never sent with these (RFC 9110 §8.6, §15.3.6); a 205 gets "Content-Length: 0" at the end.
                return;
            }
            _head.SetContentLength(length);
        }
        _head.AddHeader(nameBytes, valueBytes);
    }

    public void WriteFromApplication(PyBorrowed data)
    {
        if (!_statusSet)
        {
            throw new PythonErrorException(Py.AssertionError, "write() called before start_response()");
        }
        Write(data.AsBytesSpan(), flush: true);
    }

    private void SendResult(PyBorrowed result)
    {
        if (application.Types.FileWrapper.TryGetTarget(result, out FileWrapperObject? wrapper) && _statusSet && application.Sendfile && TrySendFile(wrapper))
        {
            return;
        }
        if (result.IsList || result.IsTuple)
        {
            bool list = result.IsList;
            nint count = list ? result.ListSize : result.TupleSize;
            if (count == 1)
            {
                DeclareLengthOfOnlyItem(list ? result.ListItem(0) : result.TupleItem(0));
            }
            for (nint i = 0; i < count; i++)
            {
                // Re-read the size each time: the application may hold and mutate its list.
                if (i >= (list ? result.ListSize : result.TupleSize))
                {
                    break;
                }
                // A list's items are all there already: nothing waits on the application, so
                // nothing needs flushing before the end (small items then share one send).
                WriteItem(list ? result.ListItem(i) : result.TupleItem(i), flush: false);
            }
        }
        else
        {
            PyRef iterator;
            try
            {
                iterator = result.GetIter();
            }
            catch (PythonException e) when (e.TypeName == "TypeError" && !e.HasTraceback)
            {
                // iter() itself refused the object (no Python frame ran): a wrong return value, one clear line.
                // An __iter__ of the application's that raised has a traceback, and is logged with it.
                e.ReleaseObjects();
                throw new ResponseException($"the application returned {result.TypeName()}, which is not an iterable of bytes");
            }
            using (iterator)
            {
                // Iterators over a list or tuple yield without running application code or
                // blocking, so looking one item ahead delays nothing: the last item then goes out
                // with the end of the response in one send, and a single item gets a
                // Content-Length instead of chunked framing (Django's HttpResponse is one).
                // Any other iterator may be a generator that streams: each of its items is sent
                // as soon as it is produced, as PEP 3333 requires.
                bool lookAhead = iterator.Borrow().TypeHandle is var type && (type == Py.ListIteratorType || type == Py.TupleIteratorType);
                PyRef item = iterator.Borrow().IterNext();
                bool first = true;
                try
                {
                    while (!item.IsNull)
                    {
                        PyRef next = lookAhead ? iterator.Borrow().IterNext() : default;
                        try
                        {
                            bool last = lookAhead && next.IsNull;
                            if (last && first)
                            {
                                DeclareLengthOfOnlyItem(item.Borrow());
                            }
                            WriteItem(item.Borrow(), flush: !lookAhead);
                        }
                        catch
                        {
                            next.Dispose();
                            throw;
                        }
                        item.Dispose();
                        item = lookAhead ? next : iterator.Borrow().IterNext();
                        first = false;
                    }
                }
                finally
                {
                    item.Dispose();
                }
            }
        }
        EndResponse();
    }

    /// <summary>A body that is one bytes item gets its Content-Length, unless the application declared one or the head is already out.</summary>
    private void DeclareLengthOfOnlyItem(PyBorrowed item)
    {
        if (!_headersSent && _statusSet && _head.ContentLength < 0 && item.IsBytes && !_bodyForbidden)
        {
            AddContentLength(item.Length);
        }
    }

    private void WriteItem(PyBorrowed item, bool flush)
    {
        if (!item.IsBytes)
        {
            throw new ResponseException($"the application's response iterable yielded {item.TypeName()}, but PEP 3333 requires bytes");
        }
        if (!_statusSet)
        {
            throw new ResponseException("the application returned a body without calling start_response()");
        }
        Write(item.AsBytesSpan(), flush);
    }

    private void Write(ReadOnlySpan<byte> data, bool flush)
    {
        if (data.IsEmpty)
        {
            return;
        }
        if (_bodyForbidden)
        {
            // Dropped; the head goes out at the end (EndResponse), with a 205's "Content-Length: 0".
            return;
        }
        IHttpExchange exchange = Exchange;
        if (!_headersSent)
        {
            exchange.WriteHead(_head);
            _headersSent = true;
        }
        if (_isHead)
        {
            return;
        }
        if (_head.ContentLength >= 0)
        {
            long room = _head.ContentLength - _bodyBytesSent;
            if (data.Length > room)
            {
                if (!_truncatedWarned)
                {
                    _truncatedWarned = true;
                    Log.Warning($"{DescribeRequest()}: the application sent more than its Content-Length of {_head.ContentLength}; the excess was dropped");
                }
                data = data[..(int)Math.Max(0, room)];
                if (data.IsEmpty)
                {
                    return;
                }
            }
        }
        _bodyBytesSent += data.Length;
        if (!exchange.WriteBody(data, flush))
        {
            bool alive;
            using (Gil.Release())
            {
                alive = exchange.WaitForDrain();
            }
            if (!alive)
            {
                throw new ClientGoneException();
            }
        }
        if (exchange.ClientDisconnected)
        {
            throw new ClientGoneException();
        }
    }

    private bool TrySendFile(FileWrapperObject wrapper)
    {
        // Only a file whose read() gives the descriptor's bytes (see PlainFiles); the rest is iterated.
        using PyRef file = application.PlainFiles.FileBehind(wrapper.FileLike);
        if (file.IsNull)
        {
            return false;
        }
        using PyRef fileno = file.Borrow().GetAttrOrNull("fileno\0"u8);
        if (fileno.IsNull)
        {
            return false;
        }
        long fd;
        long offset = 0;
        try
        {
            using PyRef number = fileno.Borrow().CallNoArgs();
            fd = number.Borrow().AsLong();
            using PyRef tell = file.Borrow().GetAttrOrNull("tell\0"u8);
            if (!tell.IsNull)
            {
                using PyRef position = tell.Borrow().CallNoArgs();
                offset = position.Borrow().AsLong();
            }
        }
        catch (PythonException e)
        {
            // A closed file raises here: it is iterated instead, and its read() raises the error the application should see.
            e.ReleaseObjects();
            return false;
        }
        using var handle = new SafeFileHandle((nint)fd, ownsHandle: false);
        long length;
        try
        {
            length = RandomAccess.GetLength(handle);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
        if (length <= offset)
        {
            // Pipes and sockets report no size; an exhausted file has nothing to send: iterate instead.
            return false;
        }
        if (_bodyForbidden)
        {
            EndResponse();
            return true;
        }
        long count = length - offset;
        if (_head.ContentLength >= 0)
        {
            // What write() sent already counts against the declared length.
            count = Math.Min(count, Math.Max(0, _head.ContentLength - _bodyBytesSent));
        }
        else if (!_headersSent)
        {
            AddContentLength(count);
        }
        IHttpExchange exchange = Exchange;
        if (!_headersSent)
        {
            exchange.WriteHead(_head);
            _headersSent = true;
        }
        if (!_isHead && !_bodyForbidden && count > 0)
        {
            bool sent;
            using (Gil.Release())
            {
                sent = exchange.SendFile(handle, offset, count);
            }
            if (!sent)
            {
                throw new ClientGoneException();
            }
            _bodyBytesSent += count;
        }
        EndResponse();
        return true;
    }

    private void EndResponse()
    {
        if (!_statusSet)
        {
            throw new ResponseException("the application returned without calling start_response()");
        }
        IHttpExchange exchange = Exchange;
        if (!_headersSent)
        {
            // A HEAD response's Content-Length must be what a GET would send (RFC 9110 §9.3.2):
            // an application that gave none (werkzeug for streamed bodies) gets none, not 0.
            if (_head.ContentLength < 0 && (!_bodyForbidden || _head.StatusCode == 205) && !_isHead)
            {
                AddContentLength(0);
            }
            exchange.WriteHead(_head);
            _headersSent = true;
        }
        bool shortBody = _head.ContentLength >= 0 && _bodyBytesSent < _head.ContentLength && !_isHead && !_bodyForbidden;
        if (shortBody)
        {
            Log.Warning($"{DescribeRequest()}: the application sent {_bodyBytesSent} of its Content-Length of {_head.ContentLength} bytes; {(exchange.Request.Version == HttpVersion.Http2 ? "resetting the stream" : "closing the connection")}");
        }
        Finish(shortBody ? ResponseEnd.Truncated : ResponseEnd.Complete);
    }

    private void AddContentLength(long length)
    {
        Span<byte> digits = stackalloc byte[20];
        Utf8Formatter.TryFormat(length, digits, out int written);
        _head.AddHeader("Content-Length"u8, digits[..written]);
        _head.SetContentLength(length);
    }

    /// <summary>An error the application caused: a 500 if nothing was sent yet, otherwise the connection is cut.</summary>
    private void Fail(string logMessage)
    {
        Log.Error(logMessage);
        if (_finished || _exchange is null)
        {
            return;
        }
        if (_headersSent)
        {
            Finish(ResponseEnd.Aborted);
            return;
        }
        _head.Reset();
        _head.SetStatus(500, "Internal Server Error"u8);
        _head.AddHeader("Content-Type"u8, "text/html"u8);
        _bodyForbidden = false;
        AddContentLength(s_errorBody.Length);
        _exchange.WriteHead(_head);
        _headersSent = true;
        if (!_isHead)
        {
            _exchange.WriteBody(s_errorBody, flush: false);
        }
        Finish(ResponseEnd.Complete);
    }

    private void Finish(ResponseEnd end)
    {
        if (_finished || _exchange is null)
        {
            return;
        }
        _finished = true;
        // Taken back from the watchdog before the exchange is completed: once completed, the
        // engine may reuse it for the connection's next request.
        TimeoutOutcome timedOut = slot?.End() ?? TimeoutOutcome.AlreadyComplete;
        if (timedOut != TimeoutOutcome.AlreadyComplete)
        {
            int answered = timedOut == TimeoutOutcome.Answered504 ? 504 : _head.StatusCode;
            if (Log.AccessLogEnabled)
            {
                // The watchdog's 504 or a cut connection: what the application wrote was dropped.
                _bodyBytesSent = 0;
                WriteAccessLog(_exchange.Request, answered);
            }
            Statsd.Current?.Request(answered, System.Diagnostics.Stopwatch.GetElapsedTime(_startTimestamp).TotalMilliseconds);
            _exchange.Abort();
            return;
        }
        if (Log.AccessLogEnabled)
        {
            WriteAccessLog(_exchange.Request, _head.StatusCode);
        }
        Statsd.Current?.Request(_head.StatusCode, System.Diagnostics.Stopwatch.GetElapsedTime(_startTimestamp).TotalMilliseconds);
        if (end == ResponseEnd.Aborted)
        {
            _exchange.Abort();
        }
        else
        {
            _exchange.Complete(closeConnection: end == ResponseEnd.Truncated);
        }
    }

    /// <summary>One line in <c>--access-logformat</c> (gunicorn's default unless given).</summary>
    private void WriteAccessLog(RequestHead request, int status)
    {
        StringBuilder line = _accessLine ??= new StringBuilder(256);
        line.Clear();
        var entry = new AccessLogEntry(request, _head, status, _bodyBytesSent,
            System.Diagnostics.Stopwatch.GetElapsedTime(_startTimestamp), DateTimeOffset.Now);
        application.AccessLogFormat.Append(line, entry);
        line.Append('\n');
        Log.Access(Encoding.UTF8.GetBytes(line.ToString()));
    }

    private void CloseIterable(PyBorrowed result)
    {
        if (result.IsExactListOrTuple)
        {
            // The common case has no close(): looking it up would raise and format an AttributeError per request.
            return;
        }
        try
        {
            using PyRef close = result.GetAttrOrNull("close\0"u8);
            if (!close.IsNull)
            {
                using PyRef ignored = close.Borrow().CallNoArgs();
            }
        }
        catch (PythonException e)
        {
            Log.Error($"Error closing the response of {DescribeRequest()}\n{e.Traceback}");
            e.ReleaseObjects();
        }
    }

    private string DescribeRequest()
    {
        if (_exchange is null)
        {
            return "(finished request)";
        }
        RequestHead request = _exchange.Request;
        return $"{request.Method} {Encoding.Latin1.GetString(request.Target)}";
    }

    private static bool IsDigit(byte b) => b is >= (byte)'0' and <= (byte)'9';

    private static bool ContainsControl(ReadOnlySpan<byte> text)
    {
        foreach (byte b in text)
        {
            if ((b < 0x20 && b != '\t') || b == 0x7F)
            {
                return true;
            }
        }
        return false;
    }


    private static bool IsHopByHop(ReadOnlySpan<byte> name) =>
        Ascii.EqualsIgnoreCase(name, "connection"u8) || Ascii.EqualsIgnoreCase(name, "keep-alive"u8) ||
        Ascii.EqualsIgnoreCase(name, "proxy-authenticate"u8) || Ascii.EqualsIgnoreCase(name, "proxy-authorization"u8) ||
        Ascii.EqualsIgnoreCase(name, "te"u8) || Ascii.EqualsIgnoreCase(name, "trailer"u8) || Ascii.EqualsIgnoreCase(name, "trailers"u8) ||
        Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8) || Ascii.EqualsIgnoreCase(name, "upgrade"u8);

    private enum ResponseEnd { Complete, Truncated, Aborted }

    private sealed class ResponseException(string message) : Exception(message);

    private sealed class ClientGoneException : Exception;
}
