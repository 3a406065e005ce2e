using System.Net.Sockets;
using Osprey.Cli;
using Osprey.Http.Kestrel;
using Osprey.Http.Lean;
using Osprey.Wsgi;

namespace Osprey.Http;

/// <summary>
/// Starts the engine <c>--engine</c> asks for on the already bound listeners: the lean epoll
/// engine by default, Kestrel on request (and, later, for TLS and HTTP/2).
/// </summary>
public static class HttpEngines
{
    public static IHttpEngine Start(EngineKind kind, IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings) => kind switch
    {
        EngineKind.Kestrel => KestrelEngine.StartAsync(listeners, workers, settings).GetAwaiter().GetResult(),
        // Cleartext HTTP/1.1 is every listener today, and the lean engine's home ground.
        _ => LeanEngine.Start(listeners, workers, settings),
    };
}
