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
    private readonly SemaphoreSlim _available = new(0);
    private readonly Thread[] _threads;
    private readonly WsgiApplication _application;
    private volatile bool _stopping;

    public PythonWorkers(WsgiApplication application, int threads)
    {
        _application = application;
        _threads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"python-{i}" };
            _threads[i].Start();
        }
    }

    private long _dispatched;

    /// <summary>Requests handed to the Python threads so far (the worker's request count).</summary>
    public long RequestCount => Interlocked.Read(ref _dispatched);

    public void Dispatch(IHttpExchange exchange)
    {
        Interlocked.Increment(ref _dispatched);
        _queue.Enqueue(exchange);
        _available.Release();
    }

    private void Run()
    {
        var thread = new PythonThread();
        thread.Attach();
        var worker = new WsgiWorker(_application);
        while (true)
        {
            _available.Wait();
            if (_stopping)
            {
                return;
            }
            thread.TakeGil();
            try
            {
                // Drain what is already queued before giving the GIL back.
                do
                {
                    if (_queue.TryDequeue(out IHttpExchange? exchange))
                    {
                        HandleSafely(worker, exchange);
                    }
                }
                while (!_stopping && _available.Wait(0));
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
        _available.Release(_threads.Length);
    }
}
