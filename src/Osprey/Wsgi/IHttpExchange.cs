using Microsoft.Win32.SafeHandles;

namespace Osprey.Wsgi;

public enum HttpVersion { Http10, Http11, Http2 }

/// <summary>What <see cref="IHttpExchange.TryTimeOut"/> did.</summary>
public enum TimeoutOutcome
{
    /// <summary>The request had already completed (or been aborted): nothing was done.</summary>
    AlreadyComplete,

    /// <summary>No response byte had been committed: the client got 504 Gateway Timeout and the connection closes.</summary>
    Answered504,

    /// <summary>The response had started and cannot be completed: the connection was closed.</summary>
    ConnectionClosed,
}

/// <summary>
/// One request and its response as the WSGI layer sees them, whichever HTTP engine carries them.
/// The WSGI layer calls these from a Python thread. Methods documented as blocking are called
/// with the GIL released; the others must return at once.
/// </summary>
public interface IHttpExchange
{
    RequestHead Request { get; }

    /// <summary>
    /// Copies request body bytes; returns 0 at the end of the body. Blocks only when
    /// <see cref="BodyIsBuffered"/> is false (the body is streamed, as for Expect: 100-continue).
    /// </summary>
    int ReadBody(Span<byte> destination);

    /// <summary>The whole body is in memory or spooled, so <see cref="ReadBody"/> never waits for the client.</summary>
    bool BodyIsBuffered { get; }

    /// <summary>Bytes of a buffered body that <see cref="ReadBody"/> has not returned yet; -1 when the body is streamed.</summary>
    long BufferedBodyRemaining { get; }

    /// <summary>Queues the status line and headers; they go out with the first body write or at completion.</summary>
    void WriteHead(ResponseHead head);

    /// <summary>
    /// Copies body bytes into the engine's output. <paramref name="flush"/> says the application
    /// may take its time before its next write (a generator's item, write()): the bytes must then
    /// be on their way without waiting for more, as PEP 3333 requires. Without it the engine may
    /// hold them until more output or the end of the response. Returns false when the client is
    /// not keeping up and the caller must call <see cref="WaitForDrain"/> (blocking) before
    /// writing more.
    /// </summary>
    bool WriteBody(ReadOnlySpan<byte> data, bool flush);

    /// <summary>Blocks until buffered output is below the engine's limit. False if the client is gone.</summary>
    bool WaitForDrain();

    /// <summary>Sends <paramref name="count"/> bytes of a file from <paramref name="offset"/> (blocking). False if the client is gone.</summary>
    bool SendFile(SafeFileHandle file, long offset, long count);

    /// <summary>
    /// The response is over. With <paramref name="closeConnection"/> the body fell short of its
    /// Content-Length: what was written is still delivered, then the connection is closed.
    /// </summary>
    void Complete(bool closeConnection);

    /// <summary>The response cannot be completed: close the connection without finishing it.</summary>
    void Abort();

    bool ClientDisconnected { get; }

    /// <summary>
    /// The request ran past <c>--timeout</c>. Called from the watchdog thread (never a Python
    /// thread, GIL not held) while the Python thread may be writing concurrently; it must not
    /// block on that thread. From here on the exchange takes no more output for this request:
    /// <see cref="WriteHead"/>, <see cref="WriteBody"/> and <see cref="SendFile"/> are dropped
    /// and <see cref="ClientDisconnected"/> is true. The Python thread still owns the exchange
    /// and releases it with <see cref="Abort"/> whenever (if ever) the application returns, so
    /// the engine must not reuse it before then. The caller calls this at most once per request
    /// and only before the Python thread has called <see cref="Complete"/> or <see cref="Abort"/>
    /// (<see cref="RequestWatchdog"/> arbitrates that); it returns
    /// <see cref="TimeoutOutcome.AlreadyComplete"/> if the request nevertheless completed.
    /// </summary>
    TimeoutOutcome TryTimeOut();
}
