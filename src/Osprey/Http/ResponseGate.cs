namespace Osprey.Http;

/// <summary>
/// Who may write a request's response: the Python thread, or the watchdog answering a timeout
/// (<see cref="Wsgi.IHttpExchange.TryTimeOut"/>). One int per exchange, reset to
/// <see cref="Open"/> when the request is dispatched; the Python thread moves it once when the
/// response head is committed and once at completion, so a write costs no extra interlocked
/// operation (later writes see the exchange's client-gone flag instead).
/// </summary>
internal static class ResponseGate
{
    /// <summary>Nothing committed yet: a timeout may still answer 504.</summary>
    public const int Open = 0;

    /// <summary>The Python thread committed the response head: a timeout can only close the connection.</summary>
    public const int Started = 1;

    /// <summary>The Python thread is sending <c>100 Continue</c> (lean engine): a timeout closes the connection.</summary>
    public const int Continue = 2;

    /// <summary>The watchdog answered 504; the Python thread's output is dropped.</summary>
    public const int Answered504 = 3;

    /// <summary>The watchdog closed the connection after the response had started.</summary>
    public const int Cut = 4;

    /// <summary>The Python thread completed or aborted the exchange.</summary>
    public const int Completed = 5;

    /// <summary>
    /// The watchdog's move: <see cref="Open"/> becomes <see cref="Answered504"/> (the caller sends
    /// the 504), <see cref="Started"/> or <see cref="Continue"/> becomes <see cref="Cut"/> (the
    /// caller closes the connection); anything else means the Python thread finished first.
    /// </summary>
    public static Wsgi.TimeoutOutcome ClaimForTimeout(ref int gate)
    {
        while (true)
        {
            int current = Volatile.Read(ref gate);
            int next = current switch
            {
                Open => Answered504,
                Started or Continue => Cut,
                _ => -1,
            };
            if (next < 0)
            {
                return Wsgi.TimeoutOutcome.AlreadyComplete;
            }
            if (Interlocked.CompareExchange(ref gate, next, current) == current)
            {
                return next == Answered504 ? Wsgi.TimeoutOutcome.Answered504 : Wsgi.TimeoutOutcome.ConnectionClosed;
            }
        }
    }

    public static ReadOnlySpan<byte> TimeoutBody =>
        "<html><head><title>Gateway Timeout</title></head><body><h1><p>Gateway Timeout</p></h1></body></html>"u8;
}
