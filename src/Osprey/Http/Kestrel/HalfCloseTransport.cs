using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Threading.Tasks.Sources;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace Osprey.Http.Kestrel;

/// <summary>
/// Lets a client that sent its request and then half-closed (shutdown(SHUT_WR): <c>nc -N</c>, health
/// checkers, some HTTP/1.0 clients) receive its response, as RFC 9112 §9.6 allows and the lean engine and
/// gunicorn do. Kestrel reads a FIN as the client aborting, in two places:
/// <list type="bullet">
/// <item>The socket transport cancels <see cref="BaseConnectionContext.ConnectionClosed"/> as soon as its
/// receive loop ends, FIN or reset alike (SocketConnection.DoReceive: <c>Input.Complete(...)</c> then
/// <c>FireConnectionClosed()</c>), and HttpConnection answers that token with
/// Http1Connection.OnInputOrOutputCompleted: the output is aborted and RequestAborted cancelled, so
/// the response is dropped whenever it is written.</item>
/// <item>Http1ContentLengthMessageBody throws "unexpected end of request content" (aborting the output
/// the same way) when the input's read says completed, before it looks at whether the body is already
/// all in that read.</item>
/// </list>
/// So each connection is wrapped: Kestrel's HTTP layer gets a ConnectionClosed of ours, cancelled only when
/// reading the input fails (a reset) or the connection is disposed, and an input that reports its end only
/// once the reader has examined every byte that came before it. A client that has really gone is still
/// noticed: a reset fails the next read or write (Kestrel aborts on a write whose flush finds the output
/// completed), and an end of input in the middle of a request head or body is still an error for Kestrel's
/// parser. The application cannot be interrupted before it writes anyway, with either engine.
/// </summary>
internal sealed class HalfCloseTransport(IConnectionListenerFactory inner) : IConnectionListenerFactory
{
    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        new Listener(await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false));

    private sealed class Listener(IConnectionListener inner) : IConnectionListener
    {
        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            ConnectionContext? connection = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            return connection is null ? null : new HalfClosableConnection(connection);
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => inner.UnbindAsync(cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}

/// <summary>A transport connection whose end of input is not taken for the client's abort (see <see cref="HalfCloseTransport"/>).</summary>
internal sealed class HalfClosableConnection : ConnectionContext, IDuplexPipe
{
    private readonly ConnectionContext _inner;
    private readonly PipeWriter _output;
    private readonly EndAfterDataReader _input;
    /// <summary>Never disposed: a late queued cancel must not meet a disposed source, and without timers it holds nothing.</summary>
    private readonly CancellationTokenSource _closed = new();
    private int _closeRequested;
    private IDuplexPipe _transport;

    public HalfClosableConnection(ConnectionContext inner)
    {
        _inner = inner;
        _output = inner.Transport.Output;
        _input = new EndAfterDataReader(inner.Transport.Input, this);
        _transport = this;
    }

    PipeReader IDuplexPipe.Input => _input;

    PipeWriter IDuplexPipe.Output => _output;

    /// <summary>Connection middleware (TLS) replaces it with a pipe of its own over this one.</summary>
    public override IDuplexPipe Transport
    {
        get => _transport;
        set => _transport = value;
    }

    public override string ConnectionId
    {
        get => _inner.ConnectionId;
        set => _inner.ConnectionId = value;
    }

    public override IFeatureCollection Features => _inner.Features;

    public override IDictionary<object, object?> Items
    {
        get => _inner.Items;
        set => _inner.Items = value;
    }

    public override CancellationToken ConnectionClosed
    {
        get => _closed.Token;
        set => throw new NotSupportedException("The close of a half-closable connection is its own.");
    }

    /// <summary>The PROXY protocol middleware sets these; they stay the transport's, which Kestrel's features read.</summary>
    public override EndPoint? LocalEndPoint
    {
        get => _inner.LocalEndPoint;
        set => _inner.LocalEndPoint = value;
    }

    public override EndPoint? RemoteEndPoint
    {
        get => _inner.RemoteEndPoint;
        set => _inner.RemoteEndPoint = value;
    }

    public override void Abort(ConnectionAbortedException abortReason) => _inner.Abort(abortReason);

    public override void Abort() => _inner.Abort();

    public override async ValueTask DisposeAsync()
    {
        try
        {
            await _inner.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            // Kestrel disposes after its connection middleware is done; --max-connections counts the close here.
            if (Interlocked.Exchange(ref _closeRequested, 1) == 0)
            {
                FireClosed(this);
            }
        }
    }

    /// <summary>Reading the input failed (a reset): the client is gone, as Kestrel would have been told.</summary>
    internal void InputFailed()
    {
        if (Interlocked.Exchange(ref _closeRequested, 1) == 0)
        {
            // Not inline: the cancel runs Kestrel's abort, and this is called from inside one of its reads.
            ThreadPool.UnsafeQueueUserWorkItem(FireClosed, this, preferLocal: false);
        }
    }

    private static void FireClosed(HalfClosableConnection connection)
    {
        try
        {
            connection._closed.Cancel();
        }
        catch (AggregateException e)
        {
            // On the thread pool an escaping exception would end the worker; the transport logs these too.
            Logging.Log.Error($"connection {connection.ConnectionId}: a close callback failed: {e.InnerException?.Message}");
        }
    }
}

/// <summary>
/// The transport's input, except that a read whose data the reader has not examined yet never says the
/// input is complete: the reader learns of the end only after it has examined everything before it (it
/// then reads again and gets the rest, if any, with the end). Reads that fail report the connection gone.
/// </summary>
/// <remarks>
/// A pending read is passed through this reader's own <see cref="IValueTaskSource{TResult}"/> (one read at
/// a time, as for any PipeReader) so that it costs no allocation; its continuation runs inline where the
/// transport's read completes, as it would without this layer.
/// </remarks>
internal sealed class EndAfterDataReader : PipeReader, IValueTaskSource<ReadResult>
{
    private readonly PipeReader _inner;
    private readonly HalfClosableConnection _connection;
    private readonly Action _onInnerReadCompleted;
    private ManualResetValueTaskSourceCore<ReadResult> _read;
    private ValueTask<ReadResult> _pendingRead;
    /// <summary>The last read's data, when its end of input was hidden: how much of it the reader examines decides the next read.</summary>
    private ReadOnlySequence<byte> _hiddenEndData;
    private bool _endHidden;
    /// <summary>The reader examined all the data before the end: the end is no longer hidden.</summary>
    private bool _endDue;

    public EndAfterDataReader(PipeReader inner, HalfClosableConnection connection)
    {
        _inner = inner;
        _connection = connection;
        _onInnerReadCompleted = OnInnerReadCompleted;
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        ValueTask<ReadResult> read;
        try
        {
            read = _inner.ReadAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _connection.InputFailed();
            throw;
        }
        if (read.IsCompletedSuccessfully)
        {
            return new ValueTask<ReadResult>(Filter(read.Result));
        }
        _pendingRead = read;
        _read.Reset();
        read.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onInnerReadCompleted);
        return new ValueTask<ReadResult>(this, _read.Version);
    }

    private void OnInnerReadCompleted()
    {
        ValueTask<ReadResult> read = _pendingRead;
        _pendingRead = default;
        ReadResult result;
        try
        {
            result = read.Result;
        }
        catch (Exception e)
        {
            if (e is not OperationCanceledException)
            {
                _connection.InputFailed();
            }
            _read.SetException(e);
            return;
        }
        _read.SetResult(Filter(result));
    }

    public override bool TryRead(out ReadResult result)
    {
        bool read;
        try
        {
            read = _inner.TryRead(out result);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _connection.InputFailed();
            throw;
        }
        if (read)
        {
            result = Filter(result);
        }
        return read;
    }

    private ReadResult Filter(ReadResult result)
    {
        if (!result.IsCompleted || result.Buffer.IsEmpty || _endDue)
        {
            return result;
        }
        _hiddenEndData = result.Buffer;
        _endHidden = true;
        return new ReadResult(result.Buffer, result.IsCanceled, isCompleted: false);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_endHidden)
        {
            // Before the inner advance, which may return the data's first segments to the pool.
            _endDue = _hiddenEndData.GetOffset(examined) >= _hiddenEndData.Length;
            _hiddenEndData = default;
            _endHidden = false;
        }
        _inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => _inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => _inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token) => _read.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _read.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _read.OnCompleted(continuation, state, token, flags);
}
