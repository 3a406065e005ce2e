using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Osprey.Wsgi;

namespace Osprey.Http.Kestrel;

/// <summary>
/// Connection middleware that runs before Kestrel's HTTP parser: takes a PROXY header off the
/// transport of a connection from a trusted peer and makes its source the connection's remote
/// endpoint, which is where Kestrel's IHttpConnectionFeature (and so REMOTE_ADDR) reads it from.
/// </summary>
internal static class KestrelProxyProtocol
{
    /// <summary>
    /// Kestrel's RequestHeadersTimeout starts only once HTTP does, so the PROXY header gets the
    /// same --header-timeout of its own: a peer that connects and stalls is cut.
    /// </summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> Middleware(HttpSettings settings) =>
        next => context => OnConnectionAsync(context, next, settings.ProxyAllowFrom, settings.HeaderTimeout);

    private static async Task OnConnectionAsync(ConnectionContext context, ConnectionDelegate next, TrustedProxies trusted, TimeSpan headerTimeout)
    {
        // A Unix-socket peer has no IP endpoint and is trusted, as gunicorn trusts it.
        if (context.RemoteEndPoint is IPEndPoint peer && !trusted.Contains(peer.Address))
        {
            await next(context).ConfigureAwait(false);
            return;
        }
        PipeReader input = context.Transport.Input;
        using (var timeout = new CancellationTokenSource(headerTimeout))
        {
            try
            {
                while (true)
                {
                    ReadResult result = await input.ReadAsync(timeout.Token).ConfigureAwait(false);
                    ReadOnlySequence<byte> buffer = result.Buffer;
                    ProxyHeaderStatus status = ProxyProtocol.TryParse(buffer, out int consumed, out ProxyHeader header);
                    if (status == ProxyHeaderStatus.NeedMore)
                    {
                        input.AdvanceTo(buffer.Start, buffer.End);
                        if (result.IsCompleted)
                        {
                            return;
                        }
                        continue;
                    }
                    if (status == ProxyHeaderStatus.Invalid)
                    {
                        input.AdvanceTo(buffer.Start, buffer.End);
                        Logging.Log.Warning($"malformed PROXY protocol header from {Describe(context.RemoteEndPoint)}: connection closed");
                        context.Abort(new ConnectionAbortedException("malformed PROXY protocol header"));
                        return;
                    }
                    // None leaves everything for HTTP (consumed is 0); Parsed leaves what follows the header.
                    input.AdvanceTo(buffer.GetPosition(consumed));
                    if (header.Source is not null && header.Destination is not null)
                    {
                        context.RemoteEndPoint = header.Source;
                        context.LocalEndPoint = header.Destination;
                    }
                    break;
                }
            }
            catch (OperationCanceledException)
            {
                context.Abort(new ConnectionAbortedException("no PROXY protocol header or request within the header timeout"));
                return;
            }
            catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException)
            {
                return;
            }
        }
        await next(context).ConfigureAwait(false);
    }

    private static string Describe(EndPoint? endPoint) => endPoint is IPEndPoint ip
        ? (ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address).ToString()
        : "a Unix socket peer";
}
