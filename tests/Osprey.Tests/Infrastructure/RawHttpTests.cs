using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Osprey.Tests.Infrastructure;

/// <summary>The raw HTTP client the integration tests rely on, checked against canned server bytes.</summary>
public sealed class RawHttpTests
{
    /// <summary>Accepts one connection, runs <paramref name="serve"/> on it, and returns a client connected to it.</summary>
    private static async Task<(RawHttpConnection Client, Task Served)> CannedAsync(Func<Socket, Task> serve)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var served = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync();
            listener.Stop();
            await serve(socket);
        });
        var client = await RawHttpConnection.OpenAsync(port);
        return (client, served);
    }

    private static async Task SendAsync(Socket socket, string latin1) => await socket.SendAsync(Encoding.Latin1.GetBytes(latin1));

    [Fact]
    public async Task Parses_pipelined_content_length_and_chunked_responses()
    {
        var (client, served) = await CannedAsync(s => SendAsync(s,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: Kept\r\nX-Case: twice\r\n\r\nhello" +
            "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n"));
        using (client)
        {
            var first = await client.ReadResponseAsync();
            Assert.Equal(200, first.StatusCode);
            Assert.Equal("OK", first.Reason);
            Assert.Equal(BodyFraming.ContentLength, first.Framing);
            Assert.Equal("hello", first.BodyText);
            Assert.Equal(["Kept", "twice"], first.HeaderValues("x-case"));
            Assert.Equal("X-Case", first.Headers[1].Key);

            var second = await client.ReadResponseAsync();
            Assert.Equal(201, second.StatusCode);
            Assert.Equal(BodyFraming.Chunked, second.Framing);
            Assert.Equal("abcde", second.BodyText);
            Assert.True(second.Complete);
            Assert.Equal("3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n", Encoding.Latin1.GetString(second.RawChunkedBody!));
        }
        await served;
    }

    [Fact]
    public async Task Short_content_length_then_close_is_incomplete()
    {
        var (client, served) = await CannedAsync(async s =>
        {
            await SendAsync(s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
            s.Shutdown(SocketShutdown.Both);
        });
        using (client)
        {
            var response = await client.ReadResponseAsync();
            Assert.Equal("12345", response.BodyText);
            Assert.False(response.Complete);
            Assert.True(response.ConnectionClosed);
        }
        await served;
    }

    [Fact]
    public async Task Chunked_body_without_last_chunk_is_incomplete()
    {
        var (client, served) = await CannedAsync(async s =>
        {
            await SendAsync(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
            s.Shutdown(SocketShutdown.Both);
        });
        using (client)
        {
            var response = await client.ReadResponseAsync();
            Assert.Equal("first", response.BodyText);
            Assert.False(response.Complete);
            Assert.True(response.ConnectionClosed);
        }
        await served;
    }

    [Fact]
    public async Task Body_without_length_runs_until_close()
    {
        var (client, served) = await CannedAsync(async s =>
        {
            await SendAsync(s, "HTTP/1.0 200 OK\r\n\r\nall of it");
            s.Shutdown(SocketShutdown.Both);
        });
        using (client)
        {
            var response = await client.ReadResponseAsync();
            Assert.Equal(BodyFraming.UntilClose, response.Framing);
            Assert.Equal("all of it", response.BodyText);
            Assert.True(response.ConnectionClosed);
        }
        await served;
    }

    [Fact]
    public async Task Interim_responses_are_separated_from_the_final_one()
    {
        var (client, served) = await CannedAsync(s => SendAsync(s,
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        using (client)
        {
            var (interim, final) = await client.ReadFinalResponseAsync();
            Assert.Equal("HTTP/1.1 100 Continue", Assert.Single(interim).StatusLine);
            Assert.Equal("ok", final.BodyText);
        }
        await served;
    }

    [Fact]
    public async Task Timeout_leaves_the_connection_usable()
    {
        var release = new TaskCompletionSource();
        var (client, served) = await CannedAsync(async s =>
        {
            await release.Task;
            await SendAsync(s, "HTTP/1.1 204 No Content\r\n\r\n");
        });
        using (client)
        {
            await Assert.ThrowsAsync<TimeoutException>(() => client.ReadResponseAsync(timeout: TimeSpan.FromMilliseconds(200)));
            release.SetResult();
            var response = await client.ReadResponseAsync();
            Assert.Equal(204, response.StatusCode);
        }
        await served;
    }

    [Fact]
    public async Task Close_before_any_response_is_reported()
    {
        var (client, served) = await CannedAsync(s =>
        {
            s.Shutdown(SocketShutdown.Both);
            return Task.CompletedTask;
        });
        using (client)
        {
            await Assert.ThrowsAsync<ConnectionClosedByServerException>(() => client.ReadResponseAsync());
            Assert.True(client.ServerClosed);
        }
        await served;
    }

    [Fact]
    public async Task Bare_lf_in_the_head_is_rejected()
    {
        var (client, served) = await CannedAsync(s => SendAsync(s, "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"));
        using (client)
        {
            await Assert.ThrowsAsync<InvalidDataException>(() => client.ReadResponseAsync());
        }
        await served;
    }
}
