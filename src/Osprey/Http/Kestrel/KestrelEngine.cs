using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Osprey.Wsgi;
using Osprey.Http;

namespace Osprey.Http.Kestrel;

/// <summary>
/// Kestrel hosted directly with our own <see cref="IHttpApplication{TContext}"/>: no generic host,
/// no middleware pipeline, so a request costs Kestrel's parsing and our hand-off and nothing else.
/// </summary>
public sealed class KestrelEngine : IHttpEngine
{
    /// <summary>The lean engine's bound on a request head (LeanConnection.MaxHeadSize).</summary>
    private const int MaxRequestHeadSize = 1024 * 1024;

    /// <summary>How long a stopping engine answers the requests of kept-alive connections before Kestrel closes the idle ones (the lean engine's StopIdleGraceMs).</summary>
    private static readonly TimeSpan StopIdleGrace = TimeSpan.FromSeconds(1);
    /// <summary>:method, :scheme, :path and :authority, which Kestrel counts as header fields of an HTTP/2 request (besides a Host).</summary>
    private const int PseudoHeaderFields = 4;

    private readonly KestrelServer _server;
    private readonly StopNotice _stopNotice;
    private readonly ServiceProvider _services;
    private readonly GracefulStopTransport _transport;
    /// <summary>This worker's listening descriptors, which Kestrel's sockets for them do not own.</summary>
    private readonly Socket[] _listeners;

    private KestrelEngine(KestrelServer server, ServiceProvider services, GracefulStopTransport transport, Socket[] listeners, StopNotice stopNotice)
    {
        _server = server;
        _stopNotice = stopNotice;
        _services = services;
        _transport = transport;
        _listeners = listeners;
    }

    public static async Task<KestrelEngine> StartAsync(IReadOnlyList<Socket> listeners, PythonWorkers workers, HttpSettings settings)
    {
        IServiceCollection collection = new ServiceCollection()
            .AddLogging(builder => builder.AddProvider(new KestrelLogBridge()).SetMinimumLevel(LogLevel.Warning));
        if (settings.Tls is not null)
        {
            // UseHttps takes Kestrel's metrics from the application services; only Kestrel's own
            // host registration provides them (the type is internal).
            collection.AddMetrics();
            new ServiceRegistration(collection).UseKestrelCore();
        }
        ServiceProvider services = collection.BuildServiceProvider();
        ILoggerFactory loggerFactory = services.GetRequiredService<ILoggerFactory>();

        var options = new KestrelServerOptions
        {
            AddServerHeader = false,
            ApplicationServices = services,
            // PEP 3333 environ values are latin-1 decoded bytes; Kestrel's default would reject non-ASCII.
            // Not for Content-Length, which must be digits: Kestrel's message for an invalid one fails to
            // decode it with a custom encoding, and the connection was dropped without its 400.
            RequestHeaderEncodingSelector = name => string.Equals(name, "Content-Length", StringComparison.OrdinalIgnoreCase) ? null : Encoding.Latin1,
            ResponseHeaderEncodingSelector = _ => Encoding.Latin1,
        };
        options.Limits.MaxRequestBodySize = settings.MaxRequestBodySize;
        options.Limits.RequestHeadersTimeout = settings.HeaderTimeout;
        options.Limits.MinRequestBodyDataRate = settings.MinRequestBodyRate > 0
            ? new MinDataRate(settings.MinRequestBodyRate, HttpSettings.BodyRateGracePeriod)
            : null;
        // The lean engine's bound on a whole head; Kestrel's default (32 KB) would refuse heads
        // that --limit-request-fields and --limit-request-field_size allow.
        options.Limits.MaxRequestHeadersTotalSize = MaxRequestHeadSize;
        // Connections beyond --max-connections wait in the backlog (ConnectionLimitingTransport);
        // Kestrel's own limit would accept and then drop them.
        options.Limits.MaxConcurrentConnections = null;
        options.Limits.KeepAliveTimeout = settings.KeepAlive > TimeSpan.Zero ? settings.KeepAlive : TimeSpan.FromMilliseconds(1);
        // The Python thread waits (without the GIL) once this much response is unsent.
        options.Limits.MaxResponseBufferSize = 1024 * 1024;
        // 0 is no limit, as in the lean engine: only the bound on a whole head (above) applies. Where HTTP/2
        // is served, Kestrel's request line check (on method, scheme, authority and path) resets an HTTP/2
        // stream instead of answering 414, and its header count includes the pseudo-header fields:
        // KestrelExchange.FillHead applies both limits as an HTTP/1.1 request counts them, to both
        // protocols, and Kestrel's bounds only stop what never passes.
        bool tls = settings.Tls is not null;
        // gunicorn's limit excludes the CRLF; Kestrel's includes it.
        options.Limits.MaxRequestLineSize = tls || settings.MaxRequestLine == 0 ? MaxRequestHeadSize : settings.MaxRequestLine + 2;
        options.Limits.MaxRequestHeaderCount = settings.MaxRequestHeaders == 0 ? int.MaxValue
            : settings.MaxRequestHeaders + (tls ? PseudoHeaderFields : 0);
        foreach (Socket listener in listeners)
        {
            // Kestrel's socket for a handle does not own it: the Socket here keeps the descriptor (StopAsync closes it).
            options.ListenHandle((ulong)listener.Handle, listen =>
            {
                // Without TLS there is no ALPN to choose HTTP/2 by, and cleartext HTTP/2 (h2c) is
                // what nobody in front of a WSGI server speaks.
                listen.Protocols = settings.Tls is null ? HttpProtocols.Http1 : HttpProtocols.Http1AndHttp2;
                if (settings.ProxyProtocol)
                {
                    // Before TLS: a proxy's PROXY header precedes the client's handshake.
                    listen.Use(KestrelProxyProtocol.Middleware(settings));
                }
                if (settings.Tls is TlsCertificate tls)
                {
                    listen.UseHttps(new HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = tls.Certificate,
                        ServerCertificateChain = tls.Intermediates,
                        ClientCertificateMode = tls.ClientCertificates switch
                        {
                            ClientCertificates.Required => ClientCertificateMode.RequireCertificate,
                            ClientCertificates.Optional => ClientCertificateMode.AllowCertificate,
                            _ => ClientCertificateMode.NoCertificate,
                        },
                        ClientCertificateValidation = tls.ClientCertificates == ClientCertificates.None ? null : tls.ValidateClientCertificate,
                    });
                }
            });
        }
        // Kestrel calls listen() again on the handles it is given, with this backlog.
        var socketOptions = new SocketTransportOptions { Backlog = settings.Backlog };
        // Innermost, so that every layer above (and --max-connections) sees a half-closed client's
        // connection as open until its response has been sent.
        var gracefulStop = new GracefulStopTransport(
            new HalfCloseTransport(new SocketTransportFactory(Options.Create(socketOptions), loggerFactory)));
        IConnectionListenerFactory transport = gracefulStop;
        if (settings.MaxConnections > 0)
        {
            transport = new ConnectionLimitingTransport(transport, settings.MaxConnections);
        }
        var server = new KestrelServer(Options.Create(options), transport, loggerFactory);
        var stopNotice = new StopNotice();
        await server.StartAsync(new WsgiHttpApplication(workers, settings, stopNotice), CancellationToken.None).ConfigureAwait(false);
        return new KestrelEngine(server, services, gracefulStop, [.. listeners], stopNotice);
    }

    /// <summary>Stops accepting, lets in-flight requests finish within <paramref name="grace"/>, then closes what is left.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        using var timeout = new CancellationTokenSource(grace);
        await _transport.UnbindAsync().ConfigureAwait(false);
        // Only this worker's copies: the siblings and the master hold theirs. When every process has closed
        // its copy (a stop), a client that connects is refused at once instead of waiting in a dead backlog.
        foreach (Socket listener in _listeners)
        {
            listener.Dispose();
        }
        // From now on every response ends its connection. A client that reuses connections and does not retry
        // (wrk, or a proxy with a POST) sends its next request right after the last response: during this wait that
        // request is answered, with Connection: close, instead of meeting Kestrel's close of idle connections.
        _stopNotice.Give();
        await _transport.WaitForConnectionsAsync(StopIdleGrace, grace).ConfigureAwait(false);
        await _server.StopAsync(timeout.Token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        _server.Dispose();
        await _services.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class WsgiHttpApplication(PythonWorkers workers, HttpSettings settings, StopNotice stopNotice) : IHttpApplication<KestrelExchange>
    {
        private static readonly object s_stateKey = new();

        public KestrelExchange CreateContext(IFeatureCollection contextFeatures)
        {
            // One exchange per HTTP/1.1 connection or pooled HTTP/2 stream, kept in Kestrel's state for
            // it, which carries one request at a time: no allocation per request.
            IDictionary<object, object?>? state = contextFeatures.Get<IPersistentStateFeature>()?.State;
            KestrelExchange exchange;
            if (state is not null && state.TryGetValue(s_stateKey, out object? existing) && existing is KestrelExchange reused)
            {
                exchange = reused;
            }
            else
            {
                exchange = new KestrelExchange(settings, stopNotice);
                if (state is not null)
                {
                    state[s_stateKey] = exchange;
                }
            }
            exchange.Bind(contextFeatures);
            return exchange;
        }

        public Task ProcessRequestAsync(KestrelExchange context) => context.ProcessAsync(workers);

        public void DisposeContext(KestrelExchange context, Exception? exception) => context.Reset();
    }
}

/// <summary>Given once a stopping engine no longer accepts: from then on every HTTP/1.x response ends its connection.</summary>
internal sealed class StopNotice
{
    private volatile bool _given;

    public bool Given => _given;

    public void Give() => _given = true;
}

/// <summary>
/// The one part of <see cref="IWebHostBuilder"/> that Kestrel's service registration
/// (<see cref="WebHostBuilderKestrelExtensions.UseKestrelCore"/>) uses: adding services, applied at once
/// to a collection of ours. There is no web host.
/// </summary>
internal sealed class ServiceRegistration(IServiceCollection services) : IWebHostBuilder
{
    public IWebHostBuilder ConfigureServices(Action<IServiceCollection> configureServices)
    {
        configureServices(services);
        return this;
    }

    public IWebHostBuilder ConfigureServices(Action<WebHostBuilderContext, IServiceCollection> configureServices) =>
        throw new NotSupportedException();

    public IWebHostBuilder ConfigureAppConfiguration(Action<WebHostBuilderContext, Microsoft.Extensions.Configuration.IConfigurationBuilder> configureDelegate) =>
        throw new NotSupportedException();

    // The interface still declares the obsolete IWebHost; this adapter never builds one.
#pragma warning disable ASPDEPR008
    public IWebHost Build() => throw new NotSupportedException();
#pragma warning restore ASPDEPR008

    public string? GetSetting(string key) => null;

    public IWebHostBuilder UseSetting(string key, string? value) => throw new NotSupportedException();
}

/// <summary>Response header names as strings, without allocating for the common ones.</summary>
internal static class KnownHeaderNames
{
    private static readonly string[] s_names =
    [
        "Content-Type", "Content-Length", "Set-Cookie", "Location", "Cache-Control", "Content-Encoding",
        "Content-Disposition", "Last-Modified", "ETag", "Expires", "Vary", "Date", "Server", "Content-Language",
        "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy", "Accept-Ranges",
        "Content-Range", "Access-Control-Allow-Origin", "WWW-Authenticate", "Allow", "Pragma", "Age", "Retry-After",
    ];

    private static readonly byte[][] s_bytes = Array.ConvertAll(s_names, Encoding.ASCII.GetBytes);

    public static string Get(ReadOnlySpan<byte> name)
    {
        for (int i = 0; i < s_bytes.Length; i++)
        {
            if (name.SequenceEqual(s_bytes[i]))
            {
                return s_names[i];
            }
        }
        return Encoding.Latin1.GetString(name);
    }
}

/// <summary>Kestrel's warnings and errors, in Osprey's error log.</summary>
internal sealed class KestrelLogBridge : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new Bridge();

    public void Dispose()
    {
    }

    private sealed class Bridge : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            // Kestrel's "application error" (event 13) is only ever a Content-Length mismatch here,
            // which the WSGI layer has already logged as a warning with the request named.
            if (!IsEnabled(logLevel) || eventId.Id == 13)
            {
                return;
            }
            string message = formatter(state, exception);
            if (exception is not null)
            {
                message += $" ({exception.GetType().Name}: {exception.Message})";
            }
            Logging.Log.Write(logLevel >= LogLevel.Error ? Logging.Severity.Error : Logging.Severity.Warning, message);
        }
    }
}
