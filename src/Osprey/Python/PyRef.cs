using System.Runtime.CompilerServices;
using System.Text;

namespace Osprey.Python;

/// <summary>
/// A borrowed reference: valid only while its owner keeps the object alive. Never decref'd.
/// </summary>
public readonly struct PyBorrowed(nint handle)
{
    public nint Handle { get; } = handle;
    public bool IsNull => Handle == 0;

    /// <summary>Takes a new strong reference of our own.</summary>
    public PyRef NewRef()
    {
        CPython.Py_IncRef(Handle);
        return PyRef.Steal(Handle);
    }

    public bool IsBytes => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_BYTES_SUBCLASS);
    public bool IsStr => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_UNICODE_SUBCLASS);
    public bool IsTuple => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_TUPLE_SUBCLASS);
    public bool IsList => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_LIST_SUBCLASS);
    public bool IsDict => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_DICT_SUBCLASS);
    public bool IsInt => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_LONG_SUBCLASS);
    public bool IsNone => Handle == Py.None.Handle;
    public bool IsCallable => CPython.PyCallable_Check(Handle) != 0;
    public nint TypeHandle => CPython.TypeOf(Handle);

    /// <summary>The str's UTF-8 text. Throws <see cref="PythonException"/> if it is not a str.</summary>
    public unsafe string AsString()
    {
        nint size;
        byte* utf8 = CPython.PyUnicode_AsUTF8AndSize(Handle, &size);
        if (utf8 == null)
        {
            throw PythonException.Fetch();
        }
        return Encoding.UTF8.GetString(utf8, (int)size);
    }

    /// <summary>The bytes object's own buffer, valid while the object lives and the GIL is held.</summary>
    public unsafe ReadOnlySpan<byte> AsBytesSpan()
    {
        byte* data;
        nint length;
        if (CPython.PyBytes_AsStringAndSize(Handle, &data, &length) != 0)
        {
            throw PythonException.Fetch();
        }
        return new ReadOnlySpan<byte>(data, checked((int)length));
    }

    public unsafe PyRef GetAttr(string name)
    {
        Span<byte> buffer = stackalloc byte[Encoding.UTF8.GetMaxByteCount(name.Length) + 1];
        int n = Encoding.UTF8.GetBytes(name, buffer);
        buffer[n] = 0;
        fixed (byte* p = buffer)
        {
            return PyRef.Check(CPython.PyObject_GetAttrString(Handle, p));
        }
    }

    /// <summary>Like getattr(o, name, None) but returning a null reference when absent.</summary>
    public unsafe PyRef GetAttrOrNull(ReadOnlySpan<byte> nulTerminatedName)
    {
        fixed (byte* p = nulTerminatedName)
        {
            nint result = CPython.PyObject_GetAttrString(Handle, p);
            if (result == 0)
            {
                CPython.PyErr_Clear();
            }
            return PyRef.Steal(result);
        }
    }

    public PyRef Call(PyBorrowed args) => PyRef.Check(CPython.PyObject_Call(Handle, args.Handle, 0));

    public PyRef CallNoArgs() => PyRef.Check(CPython.PyObject_CallObject(Handle, 0));

    public string Repr()
    {
        using PyRef repr = PyRef.Check(CPython.PyObject_Repr(Handle));
        return repr.Borrow().AsString();
    }

    public string TypeName()
    {
        using PyRef name = new PyBorrowed(TypeHandle).GetAttr("__name__");
        return name.Borrow().AsString();
    }
}

/// <summary>
/// An owned (strong) reference. Dispose releases it; <see cref="Detach"/> hands it to a C API
/// function that steals references. A default instance holds nothing.
/// Must only be disposed with the GIL held.
/// </summary>
public struct PyRef : IDisposable
{
    private nint _handle;

    private PyRef(nint handle) => _handle = handle;

    public readonly nint Handle => _handle;
    public readonly bool IsNull => _handle == 0;

    /// <summary>Wraps a new reference returned by the C API, which may be null without an error.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PyRef Steal(nint handle) => new(handle);

    /// <summary>Wraps a new reference returned by the C API, turning null into the pending Python exception.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PyRef Check(nint handle) => handle != 0 ? new PyRef(handle) : throw PythonException.Fetch();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly PyBorrowed Borrow() => new(_handle);

    /// <summary>Gives up ownership: for C API calls that steal a reference.</summary>
    public nint Detach()
    {
        nint handle = _handle;
        _handle = 0;
        return handle;
    }

    public void Dispose()
    {
        nint handle = _handle;
        if (handle != 0)
        {
            _handle = 0;
            CPython.Py_DecRef(handle);
        }
    }
}
