using Microsoft.Win32.SafeHandles;

namespace Osprey.Wsgi;

public enum HttpVersion { Http10, Http11, Http2 }

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

    /// <summary>Queues the status line and headers; they go out with the first body write or at completion.</summary>
    void WriteHead(ResponseHead head);

    /// <summary>
    /// Copies body bytes into the engine's output. Returns false when the client is not keeping up
    /// and the caller must call <see cref="WaitForDrain"/> (blocking) before writing more.
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
}
