using System.Net.Sockets;
using Osprey.Cli;
using Osprey.Http.Kestrel;
using Osprey.Http.Lean;
using Osprey.Wsgi;

namespace Osprey.Http;

/// <summary>
/// Starts the engine <c>--engine</c> asks for on the already bound listeners: the lean epoll
/// engine by default, Kestrel on request and for TLS (with HTTP/2).
/// </summary>
public static class HttpEngines
{
    public static IHttpEngine Start(EngineKind kind, IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings) => kind switch
    {
        // The lean engine speaks cleartext HTTP/1.1 only; the command line refuses --engine osprey with TLS.
        _ when kind == EngineKind.Kestrel || settings.Tls is not null =>
            KestrelEngine.StartAsync(listeners, workers, settings).GetAwaiter().GetResult(),
        _ => LeanEngine.Start(listeners, workers, settings),
    };
}
