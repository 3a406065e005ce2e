using System.Globalization;
using System.Text;
using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>
/// <c>--timeout</c> inside one serving process: a request running longer is answered
/// <c>504 Gateway Timeout</c> by the HTTP side (<see cref="IHttpExchange.TryTimeOut"/>), the
/// Python stacks of all threads go to the error log, and the process asks to be recycled.
/// <para>
/// One thread for the process, and nothing allocated per request: each Python thread publishes
/// its request in its own <see cref="RequestSlot"/>, and the watchdog sleeps until the earliest
/// deadline it saw (a request that starts later cannot expire sooner than a full timeout from
/// now). Neither the 504 nor the stacks need the GIL, which the hung code may hold forever.
/// </para>
/// </summary>
public sealed class RequestWatchdog : IDisposable
{
    private const int MinimumSleepMs = 10;

    private readonly long _timeoutMs;
    private readonly Action<string> _requestRecycle;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private RequestSlot[] _slots = [];
    private volatile bool _stopping;

    /// <summary>
    /// Registers the stack dumper (takes the GIL briefly) and starts the watchdog thread.
    /// <paramref name="requestRecycle"/> is called (on the watchdog thread) after each timeout.
    /// </summary>
    public RequestWatchdog(TimeSpan timeout, Action<string> requestRecycle)
    {
        _timeoutMs = (long)timeout.TotalMilliseconds;
        _requestRecycle = requestRecycle;
        using (Gil.Acquire())
        {
            PythonStacks.Install(Log.ErrorLogDescriptor);
        }
        Log.Debug($"--timeout {timeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)}: Python stacks are dumped with signal {PythonStacks.Signal}");
        _thread = new Thread(Run) { IsBackground = true, Name = "osprey-watchdog" };
    }

    public TimeSpan Timeout => TimeSpan.FromMilliseconds(_timeoutMs);

    /// <summary>One slot per Python thread; called once, before those threads start.</summary>
    internal RequestSlot[] CreateSlots(int count)
    {
        var slots = new RequestSlot[count];
        for (int i = 0; i < count; i++)
        {
            slots[i] = new RequestSlot($"python-{i}");
        }
        _slots = slots;
        _thread.Start();
        return slots;
    }

    private void Run()
    {
        while (!_stopping)
        {
            long now = Environment.TickCount64;
            long next = now + _timeoutMs;
            foreach (RequestSlot slot in _slots)
            {
                long deadline = slot.DeadlineOrZero(_timeoutMs, out long sequence);
                if (deadline == 0)
                {
                    continue;
                }
                if (deadline > now)
                {
                    next = Math.Min(next, deadline);
                    continue;
                }
                if (slot.TryClaim(sequence))
                {
                    try
                    {
                        TimeOut(slot, sequence, now);
                    }
                    catch (Exception e)
                    {
                        // A bug of ours (or in the recycle hook) must not stop the watchdog.
                        Log.Error($"internal error in the request watchdog: {e}");
                    }
                }
            }
            _wake.WaitOne((int)Math.Clamp(next - Environment.TickCount64, MinimumSleepMs, int.MaxValue));
        }
    }

    private void TimeOut(RequestSlot slot, long sequence, long now)
    {
        IHttpExchange exchange = slot.Exchange!;
        long elapsedMs = now - slot.StartedAt;
        string request = $"{exchange.Request.Method} {Encoding.Latin1.GetString(exchange.Request.Target)}";
        string seconds = (elapsedMs / 1000.0).ToString("0.0", CultureInfo.InvariantCulture);
        // The stacks before the answer: answering can end the body read the hung code waits in (the Kestrel
        // engine completes the request), and the code would move on before its stack was taken.
        Log.WriteWithDescriptor(Severity.Critical,
            $"WORKER TIMEOUT (pid:{Environment.ProcessId}): request {request} on thread {slot.ThreadName} " +
            $"ran for {seconds} s (--timeout {Timeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)}). Python stacks of all threads:",
            _ => PythonStacks.DumpAllThreads());

        // The Python thread cannot complete the exchange (so the engine cannot reuse it) until Handled.
        TimeoutOutcome outcome = TimeoutOutcome.AlreadyComplete;
        try
        {
            outcome = exchange.TryTimeOut();
        }
        catch (Exception e)
        {
            Log.Error($"internal error timing out {request}: {e}");
        }
        finally
        {
            slot.Handled(sequence, outcome);
        }
        if (outcome == TimeoutOutcome.AlreadyComplete)
        {
            Log.Warning($"WORKER TIMEOUT (pid:{Environment.ProcessId}): request {request} completed just as it timed out; it was not interrupted");
            return;
        }
        string answer = outcome == TimeoutOutcome.Answered504
            ? "answered 504 Gateway Timeout"
            : "the response had started, so the connection was closed";
        Log.Error($"WORKER TIMEOUT (pid:{Environment.ProcessId}): request {request} {answer}");
        _requestRecycle($"request {request} timed out after {seconds} s");
    }

    public void Dispose()
    {
        _stopping = true;
        _wake.Set();
    }
}

/// <summary>
/// One Python thread's request in flight, as the watchdog sees it. The Python thread publishes
/// a request with <see cref="Begin"/> and takes it back with <see cref="End"/>; the watchdog may
/// claim it in between. Claim and end are one compare-and-swap on the same word, so exactly one
/// of them wins, and a claim names the request's sequence number, so a watchdog that looked at
/// an earlier request can never claim a later one.
/// </summary>
internal sealed class RequestSlot(string threadName)
{
    private const long ClaimedBit = 1L << 62;

    private long _sequence;
    /// <summary>The running request's sequence number, 0 when idle, with <see cref="ClaimedBit"/> once timed out.</summary>
    private long _active;
    /// <summary>The sequence number the watchdog has finished with.</summary>
    private long _handled;
    private int _outcome;

    /// <summary>The thread's name and the identifier under which faulthandler lists its stack.</summary>
    public string ThreadName { get; private set; } = threadName;
    public IHttpExchange? Exchange { get; private set; }
    public long StartedAt { get; private set; }

    /// <summary>Python thread, once before its first request.</summary>
    public void IdentifyThread(ulong ident) =>
        ThreadName = string.Create(CultureInfo.InvariantCulture, $"{ThreadName} (Thread 0x{ident:x16})");

    /// <summary>Python thread, at the start of each request: two plain stores and one release store.</summary>
    public void Begin(IHttpExchange exchange)
    {
        Exchange = exchange;
        StartedAt = Environment.TickCount64;
        Volatile.Write(ref _active, ++_sequence);
    }

    /// <summary>
    /// Python thread, before the exchange is completed or aborted. Returns
    /// <see cref="TimeoutOutcome.AlreadyComplete"/> when the request was not timed out (complete
    /// it normally); otherwise waits for the watchdog to finish with the exchange and returns
    /// what it did (abort the exchange then).
    /// </summary>
    public TimeoutOutcome End()
    {
        long sequence = _sequence;
        if (Interlocked.CompareExchange(ref _active, 0, sequence) == sequence)
        {
            return TimeoutOutcome.AlreadyComplete;
        }
        // Claimed: the watchdog is answering the client right now (a few non-blocking calls).
        SpinWait spin = default;
        while (Volatile.Read(ref _handled) != sequence)
        {
            spin.SpinOnce();
        }
        Volatile.Write(ref _active, 0);
        return (TimeoutOutcome)_outcome;
    }

    /// <summary>Watchdog: the deadline of the request in flight and its sequence, or 0 when idle or already claimed.</summary>
    public long DeadlineOrZero(long timeoutMs, out long sequence)
    {
        sequence = Volatile.Read(ref _active);
        if (sequence == 0 || (sequence & ClaimedBit) != 0)
        {
            return 0;
        }
        // StartedAt may belong to a later request by now; TryClaim then fails, so no harm.
        return StartedAt + timeoutMs;
    }

    /// <summary>Watchdog: takes request <paramref name="sequence"/> away from its Python thread, if it is still running.</summary>
    public bool TryClaim(long sequence) =>
        Interlocked.CompareExchange(ref _active, sequence | ClaimedBit, sequence) == sequence;

    /// <summary>Watchdog: done with the exchange of the claimed request; its Python thread may release it.</summary>
    public void Handled(long sequence, TimeoutOutcome outcome)
    {
        _outcome = (int)outcome;
        Volatile.Write(ref _handled, sequence);
    }
}
