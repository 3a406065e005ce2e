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
    private const int SegmentSize = 64 * 1024;
    private readonly List<byte[]> _segments = [];
    private FileStream? _spool;
    private long _length;
    private long _readPosition;
    private readonly long _memoryLimit;

    public RequestBodyBuffer(long memoryLimit) => _memoryLimit = memoryLimit;

    public long Length => _length;

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
        while (!data.IsEmpty)
        {
            int offset = (int)(_length % SegmentSize);
            if (offset == 0 && _length / SegmentSize == _segments.Count)
            {
                _segments.Add(ArrayPool<byte>.Shared.Rent(SegmentSize));
            }
            int n = Math.Min(SegmentSize - offset, data.Length);
            data[..n].CopyTo(_segments[(int)(_length / SegmentSize)].AsSpan(offset));
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
            int count = (int)Math.Min(SegmentSize, _length - (long)i * SegmentSize);
            _spool.Write(_segments[i], 0, count);
            ArrayPool<byte>.Shared.Return(_segments[i]);
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
            int offset = (int)(_readPosition % SegmentSize);
            int n = Math.Min(SegmentSize - offset, want - copied);
            _segments[(int)(_readPosition / SegmentSize)].AsSpan(offset, n).CopyTo(destination[copied..]);
            copied += n;
            _readPosition += n;
        }
        return copied;
    }

    public void Reset()
    {
        foreach (byte[] segment in _segments)
        {
            ArrayPool<byte>.Shared.Return(segment);
        }
        _segments.Clear();
        _spool?.Dispose();
        _spool = null;
        _length = 0;
        _readPosition = 0;
    }

    public void Dispose() => Reset();
}
