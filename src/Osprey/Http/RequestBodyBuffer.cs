using System.Buffers;

namespace Osprey.Http;

/// <summary>
/// A request body received in full before the application runs, so that a slow upload costs a
/// connection but never a Python thread. Up to <c>memoryLimit</c> bytes stay in pooled memory;
/// beyond that the whole body goes to an unlinked temporary file (as nginx's client body buffer
/// does), bounded on disk by --limit-request-body.
/// </summary>
public sealed class RequestBodyBuffer : IDisposable
{
    private const int MaxSegmentSize = 64 * 1024;
    private const int MinSegmentSize = 4 * 1024;
    // Not ArrayPool<byte>.Shared: the loop buffers the bodies of every request waiting for a
    // Python thread, and the Python threads give the segments back, so at 64 connections some 64
    // segments are out at once. The shared pool keeps 32 a core and allocated the rest afresh
    // (measured on the echo benchmark: a garbage collection every few hundred requests).
    // This pool keeps up to 256 segments of each size, created only as concurrent bodies need them.
    private static readonly ArrayPool<byte> s_segments = ArrayPool<byte>.Create(MaxSegmentSize, 256);
    private readonly List<byte[]> _segments = [];
    /// <summary>The size of every segment of the current body: the declared length, when it is small.</summary>
    private int _segmentSize = MaxSegmentSize;
    private long _expectedLength = -1;
    private FileStream? _spool;
    private long _length;
    private long _readPosition;
    private readonly long _memoryLimit;

    public RequestBodyBuffer(long memoryLimit) => _memoryLimit = memoryLimit;

    public long Length => _length;

    /// <summary>Bytes appended and not read yet.</summary>
    public long Remaining => _length - _readPosition;

    /// <summary>Announces the body's Content-Length, if it has one, before its first byte is appended.</summary>
    public void Expect(long contentLength) => _expectedLength = contentLength;

    public void Append(ReadOnlySpan<byte> data)
    {
        if (_spool is null && _length + data.Length > _memoryLimit)
        {
            SpillToDisk();
        }
        if (_spool is not null)
        {
            _spool.Write(data);
            _length += data.Length;
            return;
        }
        if (_segments.Count == 0)
        {
            _segmentSize = _expectedLength > 0 ? (int)Math.Clamp(_expectedLength, MinSegmentSize, MaxSegmentSize) : MaxSegmentSize;
        }
        while (!data.IsEmpty)
        {
            int offset = (int)(_length % _segmentSize);
            if (offset == 0 && _length / _segmentSize == _segments.Count)
            {
                _segments.Add(s_segments.Rent(_segmentSize));
            }
            int n = Math.Min(_segmentSize - offset, data.Length);
            data[..n].CopyTo(_segments[(int)(_length / _segmentSize)].AsSpan(offset));
            data = data[n..];
            _length += n;
        }
    }

    private void SpillToDisk()
    {
        _spool = new FileStream(Path.Combine(Path.GetTempPath(), $"osprey-body-{Guid.NewGuid():N}"),
            FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 64 * 1024, FileOptions.DeleteOnClose);
        for (int i = 0; i < _segments.Count; i++)
        {
            int count = (int)Math.Min(_segmentSize, _length - (long)i * _segmentSize);
            _spool.Write(_segments[i], 0, count);
            s_segments.Return(_segments[i]);
        }
        _segments.Clear();
    }

    public int Read(Span<byte> destination)
    {
        long remaining = _length - _readPosition;
        if (remaining <= 0 || destination.IsEmpty)
        {
            return 0;
        }
        int want = (int)Math.Min(remaining, destination.Length);
        if (_spool is not null)
        {
            // The FileStream buffers writes; reads go around it to the file.
            _spool.Flush();
            int read = RandomAccess.Read(_spool.SafeFileHandle, destination[..want], _readPosition);
            _readPosition += read;
            return read;
        }
        int copied = 0;
        while (copied < want)
        {
            int offset = (int)(_readPosition % _segmentSize);
            int n = Math.Min(_segmentSize - offset, want - copied);
            _segments[(int)(_readPosition / _segmentSize)].AsSpan(offset, n).CopyTo(destination[copied..]);
            copied += n;
            _readPosition += n;
        }
        return copied;
    }

    public void Reset()
    {
        foreach (byte[] segment in _segments)
        {
            s_segments.Return(segment);
        }
        _segments.Clear();
        _expectedLength = -1;
        _spool?.Dispose();
        _spool = null;
        _length = 0;
        _readPosition = 0;
    }

    public void Dispose() => Reset();
}
