using System.Collections.Concurrent;
using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>
/// The dedicated threads that run the application (<c>--threads</c>). Engines hand requests
/// over with <see cref="Dispatch"/> and never wait for the GIL themselves. A thread that has the
/// GIL keeps it while more requests are queued, so a busy server pays for one GIL hand-off per
/// batch rather than per request.
/// </summary>
public sealed class PythonWorkers : IDisposable
{
    private readonly ConcurrentQueue<IHttpExchange> _queue = new();
    // Idle Python threads park on _gate. SemaphoreSlim was used before: its spin phase called
    // sched_yield several times per request (measured with perf's syscall tracepoints), a syscall
    // each, and on a server pinned to one CPU spinning only delays the loop thread that must
    // produce the next request.
    private readonly object _gate = new();
    private int _parked;
    private static readonly bool s_spinBeforeParking = Environment.ProcessorCount > 1;
    private readonly Thread[] _threads;
    private readonly WsgiApplication _application;
    private readonly RequestSlot[]? _slots;
    private volatile bool _stopping;

    /// <param name="watchdog">Times requests out (<c>--timeout</c>); null when disabled.</param>
    public PythonWorkers(WsgiApplication application, int threads, RequestWatchdog? watchdog = null)
    {
        _application = application;
        _slots = watchdog?.CreateSlots(threads);
        _threads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            RequestSlot? slot = _slots?[i];
            _threads[i] = new Thread(() => Run(slot)) { IsBackground = true, Name = $"python-{i}" };
            _threads[i].Start();
        }
    }

    private long _dispatched;

    /// <summary>Requests handed to the Python threads so far (the worker's request count).</summary>
    public long RequestCount => Interlocked.Read(ref _dispatched);

    /// <summary>Whether requests are queued that no Python thread has taken yet.</summary>
    public bool HasQueuedRequests => !_queue.IsEmpty;

    public void Dispatch(IHttpExchange exchange)
    {
        Interlocked.Increment(ref _dispatched);
        _queue.Enqueue(exchange);
        // Pairs with the increment in WaitForWork: either that thread sees the queued request, or
        // this one sees it parked and wakes it.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _parked) > 0)
        {
            lock (_gate)
            {
                Monitor.Pulse(_gate);
            }
        }
    }

    /// <summary>Returns when a request may be queued or the workers are stopping.</summary>
    private void WaitForWork()
    {
        if (s_spinBeforeParking)
        {
            // A few microseconds: cheaper than parking when requests arrive back to back.
            for (int i = 0; i < 20 && _queue.IsEmpty && !_stopping; i++)
            {
                Thread.SpinWait(30);
            }
        }
        if (!_queue.IsEmpty || _stopping)
        {
            return;
        }
        lock (_gate)
        {
            Interlocked.Increment(ref _parked);
            while (_queue.IsEmpty && !_stopping)
            {
                Monitor.Wait(_gate);
            }
            Interlocked.Decrement(ref _parked);
        }
    }

    private void Run(RequestSlot? slot)
    {
        ServingThreads.UseBatchScheduling();
        var thread = new PythonThread();
        thread.Attach();
        slot?.IdentifyThread(thread.Ident);
        var worker = new WsgiWorker(_application, slot);
        while (true)
        {
            WaitForWork();
            if (_stopping)
            {
                return;
            }
            if (!_queue.TryDequeue(out IHttpExchange? exchange))
            {
                // Another Python thread took it.
                continue;
            }
            thread.TakeGil();
            try
            {
                // Drain what is already queued before giving the GIL back.
                do
                {
                    HandleSafely(worker, exchange);
                }
                while (!_stopping && _queue.TryDequeue(out exchange));
            }
            finally
            {
                thread.DropGil();
            }
        }
    }

    private static void HandleSafely(WsgiWorker worker, IHttpExchange exchange)
    {
        try
        {
            worker.Handle(exchange);
        }
        catch (Exception e)
        {
            // A bug of ours must cost one request, not a Python thread.
            Log.Error($"internal error handling a request: {e}");
            try
            {
                exchange.Abort();
            }
            catch (Exception)
            {
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        lock (_gate)
        {
            Monitor.PulseAll(_gate);
        }
    }
}
