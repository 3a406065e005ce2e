using System.Net.Sockets;
using Osprey.Cli;
using Osprey.Http.Kestrel;
using Osprey.Wsgi;

namespace Osprey.Http;

/// <summary>Starts the engine <c>--engine</c> asks for on the already bound listeners.</summary>
public static class HttpEngines
{
    public static IHttpEngine Start(EngineKind kind, IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings) => kind switch
    {
        _ => KestrelEngine.StartAsync(listeners, workers, settings).GetAwaiter().GetResult(),
    };
}
