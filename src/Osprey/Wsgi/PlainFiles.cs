using Osprey.Python;

namespace Osprey.Wsgi;

/// <summary>
/// Tells which objects given to wsgi.file_wrapper may be sent from their file descriptor. PEP 3333 says a
/// file wrapper sends what <c>iter(filelike.read, b'')</c> would, and fileno() alone does not promise that:
/// gzip.open's GzipFile has the compressed file's descriptor and a read() that decompresses (gunicorn sends
/// the compressed bytes). So the descriptor is used only when read() is the C read of one of io's plain
/// files, found through the bound method itself, which also covers Django's File (its read, fileno and tell
/// are the wrapped file's own) and subclasses that keep io's read(). Made once per process, with the GIL.
/// </summary>
internal sealed class PlainFiles
{
    private readonly PyRef _fileIO;
    private readonly PyRef _bufferedReader;
    private readonly PyRef _bufferedRandom;
    private readonly PyRef _textIOWrapper;

    public PlainFiles()
    {
        using PyRef io = Py.Import("io");
        _fileIO = io.Borrow().GetAttr("FileIO");
        _bufferedReader = io.Borrow().GetAttr("BufferedReader");
        _bufferedRandom = io.Borrow().GetAttr("BufferedRandom");
        _textIOWrapper = io.Borrow().GetAttr("TextIOWrapper");
    }

    /// <summary>
    /// The plain file whose read() <paramref name="filelike"/>'s read is, to take fileno() and tell() from;
    /// a null reference for anything else (which is then iterated through its read()).
    /// </summary>
    public PyRef FileBehind(PyBorrowed filelike)
    {
        using PyRef read = filelike.GetAttrOrNull("read\0"u8);
        // A Python-level read() (GzipFile's, an override in a subclass) may return anything.
        if (read.IsNull || !read.Borrow().IsInstance(Py.CFunctionType))
        {
            return default;
        }
        PyRef file = read.Borrow().GetAttrOrNull("__self__\0"u8);
        if (!file.IsNull && (IsBinaryFile(file.Borrow()) || IsTextFileOverBinaryFile(file.Borrow())))
        {
            return file;
        }
        file.Dispose();
        return default;
    }

    /// <summary>An io.FileIO, or a buffered reader over one whose readinto() is FileIO's own: read() gives the descriptor's bytes.</summary>
    private bool IsBinaryFile(PyBorrowed file)
    {
        if (file.IsInstance(_fileIO.Borrow()))
        {
            return true;
        }
        if (!file.IsInstance(_bufferedReader.Borrow()) && !file.IsInstance(_bufferedRandom.Borrow()))
        {
            return false;
        }
        // The buffered read() reads through raw.readinto(), which a custom raw stream could implement in Python.
        using PyRef raw = file.GetAttrOrNull("raw\0"u8);
        if (raw.IsNull || !raw.Borrow().IsInstance(_fileIO.Borrow()))
        {
            return false;
        }
        using PyRef readinto = raw.Borrow().GetAttrOrNull("readinto\0"u8);
        return !readinto.IsNull && readinto.Borrow().IsInstance(Py.CFunctionType);
    }

    /// <summary>
    /// A text-mode open(): iterating it would yield str, which no response may hold; sent from its descriptor
    /// it goes out as the bytes on disk, as gunicorn (and Osprey before) sends it.
    /// </summary>
    private bool IsTextFileOverBinaryFile(PyBorrowed file)
    {
        if (!file.IsInstance(_textIOWrapper.Borrow()))
        {
            return false;
        }
        using PyRef buffer = file.GetAttrOrNull("buffer\0"u8);
        return !buffer.IsNull && IsBinaryFile(buffer.Borrow());
    }
}
