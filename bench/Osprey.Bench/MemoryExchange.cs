using Microsoft.Win32.SafeHandles;
using Osprey.Wsgi;

namespace Osprey.Bench;

/// <summary>
/// The benchmark's HTTP engine: one request head filled once and served again and again, the
/// response kept in memory. It does what an engine must do for the WSGI layer (hand over the
/// request, take the head, copy the body out) and nothing else, so what is measured is the bridge.
/// </summary>
internal sealed class MemoryExchange : IHttpExchange
{
    private readonly byte[] _output = new byte[64 * 1024];
    private readonly byte[] _requestBody;
    private int _bodyRead;

    public MemoryExchange(RequestHead request, byte[]? requestBody = null)
    {
        Request = request;
        _requestBody = requestBody ?? [];
    }

    public RequestHead Request { get; }

    /// <summary>The head the worker handed over; valid until its next request starts.</summary>
    public ResponseHead? Head { get; private set; }
    public int BodyLength { get; private set; }
    public bool Completed { get; private set; }
    public bool Aborted { get; private set; }
    public ReadOnlySpan<byte> Body => _output.AsSpan(0, Math.Min(BodyLength, _output.Length));

    public bool BodyIsBuffered => true;
    public long BufferedBodyRemaining => _requestBody.Length - _bodyRead;
    public bool ClientDisconnected => false;

    public void BeginRequest()
    {
        _bodyRead = 0;
        Head = null;
        BodyLength = 0;
        Completed = Aborted = false;
    }

    public int ReadBody(Span<byte> destination)
    {
        int count = Math.Min(destination.Length, _requestBody.Length - _bodyRead);
        _requestBody.AsSpan(_bodyRead, count).CopyTo(destination);
        _bodyRead += count;
        return count;
    }

    public void WriteHead(ResponseHead head) => Head = head;

    public bool WriteBody(ReadOnlySpan<byte> data, bool flush)
    {
        // Bodies beyond the buffer are counted, not kept: the benchmark apps' bodies fit.
        int room = _output.Length - BodyLength;
        if (room > 0)
        {
            data[..Math.Min(room, data.Length)].CopyTo(_output.AsSpan(BodyLength));
        }
        BodyLength += data.Length;
        return true;
    }

    public bool WaitForDrain() => true;

    public bool SendFile(SafeFileHandle file, long offset, long count)
    {
        BodyLength += (int)count;
        return true;
    }

    public void Complete(bool closeConnection) => Completed = true;

    public void Abort() => Aborted = true;

    /// <summary>The benchmark's slot has no watchdog, so nothing ever times a request out.</summary>
    public TimeoutOutcome TryTimeOut() => TimeoutOutcome.AlreadyComplete;
}
