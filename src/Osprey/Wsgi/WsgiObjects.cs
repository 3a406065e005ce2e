using System.Buffers;
using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>The Python types of the objects PEP 3333 gives the application, made once per process.</summary>
internal sealed class WsgiTypes
{
    public NativeType StartResponse { get; }
    public NativeType Write { get; }
    public NativeType Input { get; }
    public NativeType Errors { get; }
    public NativeType FileWrapper { get; }

    public WsgiTypes()
    {
        StartResponse = NativeType.Create(new("osprey.StartResponse", "start_response(status, response_headers, exc_info=None)") { Callable = true });
        Write = NativeType.Create(new("osprey.Write", "write(data): the legacy write callable of PEP 3333") { Callable = true });
        Input = NativeType.Create(new("osprey.InputStream", "wsgi.input: the request body")
        {
            Iterator = true,
            Methods = [new("read", "read(size=-1)"), new("readline", "readline(size=-1)"), new("readlines", "readlines(hint=-1)"), new("close")],
        });
        Errors = NativeType.Create(new("osprey.ErrorStream",
            "wsgi.errors, and the binary buffer under sys.stdout and sys.stderr: text or bytes written here go to Osprey's error log")
        {
            Methods = [new("write"), new("writelines"), new("flush"), new("isatty"), new("fileno"), new("writable"), new("readable"),
                new("seekable"), new("close")],
            Attributes = ["encoding", "errors", "closed", "name"],
        });
        FileWrapper = NativeType.Create(new("osprey.FileWrapper", "wsgi.file_wrapper(filelike, block_size=8192)")
        {
            Iterator = true,
            Methods = [new("close")],
            Attributes = ["filelike", "blksize"],
            Constructor = FileWrapperObject.Create,
        });
    }
}

/// <summary>Parsing help for positional arguments of native methods.</summary>
internal static class Args
{
    public static PyBorrowed Optional(PyBorrowed args, int index) =>
        args.IsNull || args.TupleSize <= index ? default : args.TupleItem(index);

    public static PyBorrowed Required(PyBorrowed args, int index, string function)
    {
        PyBorrowed item = Optional(args, index);
        return item.IsNull ? throw new PythonErrorException(Py.TypeError, $"{function}() missing a required argument") : item;
    }

    /// <summary>An optional size argument: absent, None or negative mean "no limit" (-1).</summary>
    public static long Size(PyBorrowed args, int index)
    {
        PyBorrowed size = Optional(args, index);
        if (size.IsNull || size.IsNone)
        {
            return -1;
        }
        if (!size.IsInt)
        {
            throw new PythonErrorException(Py.TypeError, $"argument should be integer or None, not '{size.TypeName()}'");
        }
        long value = size.AsLong();
        return value < 0 ? -1 : value;
    }
}

/// <summary>
/// wsgi.errors, and the binary stream under sys.stdout and sys.stderr (their <c>buffer</c>, wrapped in an
/// io.TextIOWrapper by <see cref="WsgiApplication"/>): what is written goes to the error log at once, as
/// written, str as UTF-8 and bytes-like objects as they are. It never closes: the error log outlives an
/// application that closes sys.stdout (a <c>with sys.stdout:</c> block), and logging handlers keep
/// references to sys.stderr.
/// </summary>
internal sealed class ErrorStreamObject(int fileDescriptor, string name) : NativeObject
{
    public override PyRef InvokeMethod(int index, PyBorrowed args)
    {
        switch (index)
        {
            case 0:
                return Py.Int(Write(Args.Required(args, 0, "write")));
            case 1:
                using (PyRef iterator = Args.Required(args, 0, "writelines").GetIter())
                {
                    while (true)
                    {
                        using PyRef line = iterator.Borrow().IterNext();
                        if (line.IsNull)
                        {
                            break;
                        }
                        Write(line.Borrow());
                    }
                }
                return Py.None.NewRef();
            case 4:
                return Py.Int(fileDescriptor);
            case 5:
                return Py.Bool(true);
            case 3 or 6 or 7:
                // isatty(), readable(), seekable()
                return Py.Bool(false);
            default:
                // flush() and close(): every write is already in the log.
                return Py.None.NewRef();
        }
    }

    /// <summary>Logs str or bytes-like <paramref name="data"/>; returns what write() returns: characters of a str, bytes otherwise.</summary>
    private static nint Write(PyBorrowed data)
    {
        if (data.IsBytes)
        {
            Log.Raw(data.AsBytesSpan());
            return data.Length;
        }
        if (data.IsStr)
        {
            // As the errors attribute says: text that is not valid UTF-8 is logged with backslash escapes, never refused.
            ReadOnlySpan<byte> utf8 = data.AsUtf8ForLog(out PyRef holder);
            using (holder)
            {
                Log.Raw(utf8);
            }
            return data.Length;
        }
        // bytearray, memoryview and the like, which a binary stream's write() takes as it takes bytes.
        PyRef bytes;
        try
        {
            bytes = Py.BytesFromBuffer(data);
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
            throw new PythonErrorException(Py.TypeError, $"write() argument must be str or a bytes-like object, not {data.TypeName()}");
        }
        using (bytes)
        {
            Log.Raw(bytes.Borrow().AsBytesSpan());
            return bytes.Borrow().Length;
        }
    }

    public override PyRef GetAttribute(int index) => index switch
    {
        0 => Py.Str("utf-8"),
        1 => Py.Str("backslashreplace"),
        3 => Py.Str(name),
        _ => Py.Bool(false),
    };
}

/// <summary>A per-request object of the worker's, bound to one request at a time by its generation.</summary>
internal interface IRequestBound
{
    void Bind(int generation);
}

/// <summary>
/// start_response: forwards to the request it belongs to, and refuses calls once that request is over.
/// Reused by its worker once its Python object is freed (see <see cref="WsgiWorker.Recycle(StartResponseObject)"/>).
/// </summary>
internal sealed class StartResponseObject(WsgiWorker worker) : NativeObject, IRequestBound
{
    private int _generation;

    public void Bind(int generation) => _generation = generation;

    public override void Release() => worker.Recycle(this);

    public override PyRef Call(PyBorrowed args, PyBorrowed kwargs)
    {
        worker.CheckCurrent(_generation, "start_response");
        PyBorrowed status = Args.Required(args, 0, "start_response");
        PyBorrowed headers = Args.Required(args, 1, "start_response");
        PyBorrowed excInfo = Args.Optional(args, 2);
        if (!kwargs.IsNull)
        {
            PyBorrowed keyword = Py.GetItem(kwargs, "exc_info\0"u8);
            if (!keyword.IsNull)
            {
                excInfo = keyword;
            }
        }
        return worker.StartResponse(status, headers, excInfo);
    }
}

/// <summary>The write callable start_response returns; reused as <see cref="StartResponseObject"/> is.</summary>
internal sealed class WriteObject(WsgiWorker worker) : NativeObject, IRequestBound
{
    private int _generation;

    public void Bind(int generation) => _generation = generation;

    public override void Release() => worker.Recycle(this);

    public override PyRef Call(PyBorrowed args, PyBorrowed kwargs)
    {
        worker.CheckCurrent(_generation, "write");
        PyBorrowed data = Args.Required(args, 0, "write");
        if (!data.IsBytes)
        {
            throw new PythonErrorException(Py.TypeError, $"write() argument must be bytes, not {data.TypeName()}");
        }
        worker.WriteFromApplication(data);
        return Py.None.NewRef();
    }
}

/// <summary>
/// wsgi.input over the request body. It keeps a small look-ahead buffer for readline; reading
/// stops at the end of the body and never waits beyond it. Reused as <see cref="StartResponseObject"/> is.
/// </summary>
internal sealed class InputStreamObject(WsgiWorker worker) : NativeObject, IRequestBound
{
    private const int ChunkSize = 16 * 1024;
    /// <summary>A read of more than this (of a body spooled to disk) goes in chunks through the stream's buffer.</summary>
    private const long MaxDirectRead = 64L * 1024 * 1024;
    private int _generation;
    private byte[]? _buffer;
    private int _start;
    private int _end;
    private bool _eof;

    public void Bind(int generation)
    {
        _generation = generation;
        _start = _end = 0;
        _eof = false;
    }

    public override PyRef InvokeMethod(int index, PyBorrowed args)
    {
        worker.CheckCurrent(_generation, "wsgi.input");
        return index switch
        {
            0 => Read(Args.Size(args, 0)),
            1 => ReadLine(Args.Size(args, 0)),
            2 => ReadLines(Args.Size(args, 0)),
            _ => Py.None.NewRef(),
        };
    }

    public override PyRef Next()
    {
        worker.CheckCurrent(_generation, "wsgi.input");
        PyRef line = ReadLine(-1);
        if (line.Borrow().Length == 0)
        {
            line.Dispose();
            return default;
        }
        return line;
    }

    public override void Release()
    {
        ReturnBuffer();
        worker.Recycle(this);
    }

    private int Buffered => _end - _start;

    private PyRef Read(long size)
    {
        if (size < 0)
        {
            return ReadToEnd();
        }
        if (size == 0)
        {
            return Py.Bytes([]);
        }
        if (Buffered == 0 && TryReadDirect(size, out PyRef direct))
        {
            return direct;
        }
        while (Buffered < size && Fill(size - Buffered))
        {
        }
        int take = (int)Math.Min(size, Buffered);
        PyRef result = Py.Bytes(_buffer.AsSpan(_start, take));
        _start += take;
        return result;
    }

    private PyRef ReadToEnd()
    {
        if (Buffered == 0 && TryReadDirect(long.MaxValue, out PyRef direct))
        {
            return direct;
        }
        while (Fill(ChunkSize))
        {
        }
        PyRef result = Py.Bytes(_buffer.AsSpan(_start, Buffered));
        _start = _end;
        return result;
    }

    private PyRef ReadLine(long limit)
    {
        int scanned = 0;
        while (true)
        {
            ReadOnlySpan<byte> pending = _buffer.AsSpan(_start, Buffered);
            int newline = pending[scanned..].IndexOf((byte)'\n');
            if (newline >= 0)
            {
                int length = scanned + newline + 1;
                return Take(limit >= 0 ? (int)Math.Min(limit, length) : length);
            }
            if (limit >= 0 && pending.Length >= limit)
            {
                return Take((int)limit);
            }
            scanned = pending.Length;
            if (!Fill(ChunkSize))
            {
                return Take(Buffered);
            }
        }
    }

    private PyRef ReadLines(long hint)
    {
        PyRef lines = Py.List();
        long total = 0;
        while (true)
        {
            using PyRef line = ReadLine(-1);
            nint length = line.Borrow().Length;
            if (length == 0)
            {
                return lines;
            }
            Py.Append(lines.Borrow(), line.Borrow());
            total += length;
            if (hint > 0 && total >= hint)
            {
                return lines;
            }
        }
    }

    /// <summary>
    /// read(n) of a body that is already buffered: the bytes object is made at its final size and
    /// filled straight from the engine's buffer, instead of going through this stream's own
    /// buffer (one copy of the body fewer: the echo benchmark's common case).
    /// </summary>
    private bool TryReadDirect(long size, out PyRef result)
    {
        long remaining = _eof ? 0 : worker.BufferedBodyRemaining;
        if (remaining < 0 || Math.Min(size, remaining) > MaxDirectRead)
        {
            result = default;
            return false;
        }
        int length = (int)Math.Min(size, remaining);
        PyRef bytes = Py.NewBytes(length, out Span<byte> contents);
        try
        {
            int filled = 0;
            while (filled < length)
            {
                int read = worker.ReadBody(contents[filled..]);
                if (read == 0)
                {
                    // The engine said the bytes were there: never hand out unfilled memory.
                    result = Py.Bytes(contents[..filled]);
                    bytes.Dispose();
                    return true;
                }
                filled += read;
            }
        }
        catch
        {
            bytes.Dispose();
            throw;
        }
        result = bytes;
        return true;
    }

    private PyRef Take(int length)
    {
        PyRef result = Py.Bytes(_buffer.AsSpan(_start, length));
        _start += length;
        return result;
    }

    /// <summary>Reads more of the body into the buffer; false at the end of the body.</summary>
    private bool Fill(long wanted)
    {
        if (_eof)
        {
            return false;
        }
        int want = (int)Math.Clamp(wanted, 1, 1024 * 1024);
        if (_buffer is null)
        {
            _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(ChunkSize, want));
        }
        else if (_buffer.Length - _end < want)
        {
            if (_start > 0 && _buffer.Length - Buffered >= want)
            {
                _buffer.AsSpan(_start, Buffered).CopyTo(_buffer);
            }
            else
            {
                byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, Buffered + want));
                _buffer.AsSpan(_start, Buffered).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = larger;
            }
            _end = Buffered;
            _start = 0;
        }
        int read = worker.ReadBody(_buffer.AsSpan(_end));
        if (read == 0)
        {
            _eof = true;
            return false;
        }
        _end += read;
        return true;
    }

    private void ReturnBuffer()
    {
        if (_buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
        }
    }
}

/// <summary>
/// wsgi.file_wrapper. Iterating it reads blocks through the file-like object; the server
/// recognises it as a response and sends a real file with sendfile instead.
/// </summary>
internal sealed class FileWrapperObject : NativeObject
{
    private PyRef _filelike;
    private readonly long _blockSize;

    private FileWrapperObject(PyRef filelike, long blockSize)
    {
        _filelike = filelike;
        _blockSize = blockSize;
    }

    public PyBorrowed FileLike => _filelike.Borrow();

    public static NativeObject Create(PyBorrowed args, PyBorrowed kwargs)
    {
        PyBorrowed filelike = Args.Required(args, 0, "file_wrapper");
        long blockSize = Args.Size(args, 1);
        if (!kwargs.IsNull)
        {
            PyBorrowed keyword = Py.GetItem(kwargs, "block_size\0"u8);
            if (!keyword.IsNull)
            {
                blockSize = keyword.AsLong();
            }
        }
        return new FileWrapperObject(filelike.NewRef(), blockSize > 0 ? blockSize : 8192);
    }

    public override PyRef Next()
    {
        using PyRef read = _filelike.Borrow().GetAttr("read");
        using PyRef size = Py.Int(_blockSize);
        using PyRef args = Py.Tuple(size.Borrow());
        PyRef data = read.Borrow().Call(args.Borrow());
        if (data.Borrow().Length == 0)
        {
            data.Dispose();
            return default;
        }
        return data;
    }

    public override PyRef InvokeMethod(int index, PyBorrowed args)
    {
        using PyRef close = _filelike.Borrow().GetAttrOrNull("close\0"u8);
        if (!close.IsNull)
        {
            using PyRef ignored = close.Borrow().CallNoArgs();
        }
        return Py.None.NewRef();
    }

    public override PyRef GetAttribute(int index) => index == 0 ? _filelike.Borrow().NewRef() : Py.Int(_blockSize);

    public override void Release() => _filelike.Dispose();
}
