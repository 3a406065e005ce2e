using System.Buffers;

namespace Osprey.Http.Lean;

/// <summary>
/// Response bytes the socket would not take yet, in pooled segments, plus file ranges still to
/// go out with sendfile (each holding its own duplicate descriptor, because the application
/// may close its file as soon as its response is over). Used by one thread at a time.
/// </summary>
internal sealed class OutputQueue
{
    /// <summary>
    /// The most one sendfile call is asked for. Linux splices a file through a pipe of 16 pages
    /// and, when a call asks for more than that, hands TCP every batch but the last with
    /// MSG_MORE, which lets TCP hold data back until whole segments fill up. The receiver then gets
    /// it in bursts instead of a steady stream: on loopback, whole-file calls moved 1.7 GB/s at
    /// 0.56 CPU-seconds per GB, and 64 KiB calls 3.0–3.4 GB/s at 0.30 (a C server, same file).
    /// </summary>
    public const long SendFileChunk = 64 * 1024;

    public const int SegmentSize = 16 * 1024;
    // Not ArrayPool<byte>.Shared for the common segment: a streamed response queues its blocks
    // while the loop sends them, so at 64 connections several hundred segments are out at once,
    // and the shared pool (32 a core) allocated the rest afresh: zeroing and page faults were a
    // tenth of the generator benchmark's CPU. This pool keeps what concurrent responses needed.
    // Larger appends (a big block the socket would not take) still rent from the shared pool.
    private static readonly ArrayPool<byte> s_segments = ArrayPool<byte>.Create(SegmentSize, 1024);

    private readonly List<Entry> _entries = [];
    private readonly ArraySegment<byte>[] _batch = new ArraySegment<byte>[16];
    private int _first;
    private Entry _tail;
    private bool _hasTail;

    private struct Entry
    {
        public byte[]? Buffer;
        public int Start;
        public int End;
        public int FileFd;
        public long FileOffset;
        public long FileCount;
    }

    /// <summary>Bytes held in memory (file ranges are not counted: they cost no memory).</summary>
    public long BufferedBytes { get; private set; }

    public bool IsEmpty => !_hasTail && _first == _entries.Count;

    public void Append(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (!_hasTail || _tail.Buffer is null || _tail.End == _tail.Buffer.Length)
            {
                PushTail();
                _tail = new Entry { Buffer = Rent(data.Length), FileFd = -1 };
                _hasTail = true;
            }
            int n = Math.Min(data.Length, _tail.Buffer!.Length - _tail.End);
            data[..n].CopyTo(_tail.Buffer.AsSpan(_tail.End));
            _tail.End += n;
            BufferedBytes += n;
            data = data[n..];
        }
    }

    /// <summary>
    /// Takes <paramref name="buffer"/> (from <see cref="Rent"/>) as the queue's next <paramref name="length"/>
    /// bytes instead of copying them; the queue returns it to the pool once they are sent.
    /// </summary>
    public void Adopt(byte[] buffer, int length)
    {
        if (length == 0)
        {
            Return(buffer);
            return;
        }
        PushTail();
        _tail = new Entry { Buffer = buffer, End = length, FileFd = -1 };
        _hasTail = true;
        BufferedBytes += length;
    }

    /// <summary>A buffer of at least <paramref name="wanted"/> bytes (up to 256 KB), from the pool <see cref="Return"/> gives back to.</summary>
    public static byte[] Rent(int wanted) =>
        wanted <= SegmentSize ? s_segments.Rent(SegmentSize) : ArrayPool<byte>.Shared.Rent(Math.Min(wanted, 256 * 1024));

    public static void Return(byte[] buffer)
    {
        // The shared pool's arrays for more than a segment are at least twice its size.
        if (buffer.Length == SegmentSize)
        {
            s_segments.Return(buffer);
        }
        else
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Queues a file range; the queue owns <paramref name="fileFd"/> and closes it.</summary>
    public void AppendFile(int fileFd, long offset, long count)
    {
        PushTail();
        _entries.Add(new Entry { FileFd = fileFd, FileOffset = offset, FileCount = count });
    }

    private void PushTail()
    {
        if (_hasTail)
        {
            _entries.Add(_tail);
            _hasTail = false;
        }
    }

    /// <summary>
    /// Sends <paramref name="count"/> bytes of <paramref name="file"/> from <paramref name="offset"/>,
    /// <see cref="SendFileChunk"/> at a time, until all are gone or the socket is full; advances both.
    /// False when the client is gone or the file turned out shorter than it said.
    /// </summary>
    public static bool SendFileRange(int socket, int file, ref long offset, ref long count)
    {
        while (count > 0)
        {
            long asked = Math.Min(count, SendFileChunk);
            long sent = Syscalls.SendFile(socket, file, ref offset, asked);
            if (sent < 0)
            {
                return sent == -Syscalls.EAGAIN;
            }
            if (sent == 0)
            {
                // The file shrank under us: the response cannot be completed truthfully.
                return false;
            }
            count -= sent;
            if (sent < asked)
            {
                // A short write means the socket buffer is full (the kernel has flagged it to
                // announce free space with the next EPOLLOUT edge, as nginx relies on too): asking
                // again now would only return EAGAIN, a wasted syscall on every wake-up.
                return true;
            }
        }
        return true;
    }

    /// <summary>
    /// Writes as much as the socket takes without blocking, stopping at the first short write.
    /// Returns false when the client is gone; <see cref="IsEmpty"/> tells whether everything went.
    /// </summary>
    public bool Flush(int socket)
    {
        PushTail();
        Span<ArraySegment<byte>> batch = _batch;
        while (_first < _entries.Count)
        {
            Entry head = _entries[_first];
            if (head.Buffer is null)
            {
                if (!SendFileRange(socket, head.FileFd, ref head.FileOffset, ref head.FileCount))
                {
                    return false;
                }
                if (head.FileCount == 0)
                {
                    Syscalls.Close(head.FileFd);
                    Dequeue();
                    continue;
                }
                _entries[_first] = head;
                return true;
            }

            int count = 0;
            long batchBytes = 0;
            for (int e = _first; e < _entries.Count; e++)
            {
                Entry entry = _entries[e];
                if (entry.Buffer is null || count == batch.Length)
                {
                    break;
                }
                batch[count++] = new ArraySegment<byte>(entry.Buffer, entry.Start, entry.End - entry.Start);
                batchBytes += entry.End - entry.Start;
            }
            long written = Syscalls.SendSegments(socket, batch[..count]);
            if (written < 0)
            {
                return written == -Syscalls.EAGAIN;
            }
            bool socketFull = written < batchBytes;
            BufferedBytes -= written;
            while (written > 0)
            {
                Entry first = _entries[_first];
                int length = first.End - first.Start;
                if (written >= length)
                {
                    written -= length;
                    Return(first.Buffer!);
                    Dequeue();
                }
                else
                {
                    first.Start += (int)written;
                    written = 0;
                    _entries[_first] = first;
                }
            }
            if (socketFull)
            {
                return true;
            }
        }
        return true;
    }

    private void Dequeue()
    {
        if (++_first == _entries.Count)
        {
            _entries.Clear();
            _first = 0;
        }
    }

    public void Clear()
    {
        PushTail();
        for (int e = _first; e < _entries.Count; e++)
        {
            Entry entry = _entries[e];
            if (entry.Buffer is not null)
            {
                Return(entry.Buffer);
            }
            else
            {
                Syscalls.Close(entry.FileFd);
            }
        }
        _entries.Clear();
        _first = 0;
        BufferedBytes = 0;
    }
}
