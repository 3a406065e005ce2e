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
    /// <summary>A plain list or tuple, not a subclass (which could define close()).</summary>
    public bool IsExactListOrTuple => CPython.TypeOf(Handle) is var type && (type == Py.ListType || type == Py.TupleType);
    public bool IsDict => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_DICT_SUBCLASS);
    public bool IsInt => CPython.HasTypeFlag(Handle, CPython.TPFLAGS_LONG_SUBCLASS);
    public bool IsNone => Handle == Py.None.Handle;
    public bool IsCallable => CPython.PyCallable_Check(Handle) != 0;
    public nint TypeHandle => CPython.TypeOf(Handle);

    /// <summary>The object's reference count: 1 for an object only its holder refers to.</summary>
    public unsafe nint RefCount => ((CPython.PyObjectHead*)Handle)->RefCount;

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

    /// <summary>A str's UTF-8 form, cached inside the str by CPython. Throws if it is not a str or has lone surrogates.</summary>
    public unsafe ReadOnlySpan<byte> AsUtf8()
    {
        nint size;
        byte* utf8 = CPython.PyUnicode_AsUTF8AndSize(Handle, &size);
        if (utf8 == null)
        {
            throw PythonException.Fetch();
        }
        return new ReadOnlySpan<byte>(utf8, (int)size);
    }

    /// <summary>
    /// A str's UTF-8 text for a log: its cached UTF-8 form, or, when it has lone surrogates (a file
    /// name that was not UTF-8), a copy with those written as backslash escapes, held by
    /// <paramref name="holder"/>.
    /// </summary>
    public unsafe ReadOnlySpan<byte> AsUtf8ForLog(out PyRef holder)
    {
        holder = default;
        nint size;
        byte* utf8 = CPython.PyUnicode_AsUTF8AndSize(Handle, &size);
        if (utf8 != null)
        {
            return new ReadOnlySpan<byte>(utf8, (int)size);
        }
        CPython.PyErr_Clear();
        fixed (byte* encoding = "utf-8\0"u8, errors = "backslashreplace\0"u8)
        {
            holder = PyRef.Check(CPython.PyUnicode_AsEncodedString(Handle, encoding, errors));
        }
        return holder.Borrow().AsBytesSpan();
    }

    /// <summary>A str as .NET text for a log or a message: lone surrogates come out as backslash escapes instead of failing.</summary>
    public string AsStringForLog()
    {
        ReadOnlySpan<byte> utf8 = AsUtf8ForLog(out PyRef holder);
        using (holder)
        {
            return Encoding.UTF8.GetString(utf8);
        }
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
        using var attribute = new Utf8CString(name, stackalloc byte[256]);
        fixed (byte* p = attribute)
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

    public PyRef Call(PyBorrowed args, PyBorrowed kwargs) => PyRef.Check(CPython.PyObject_Call(Handle, args.Handle, kwargs.Handle));

    public PyRef CallNoArgs() => PyRef.Check(CPython.PyObject_CallObject(Handle, 0));

    public PyRef CopyDict() => PyRef.Check(CPython.PyDict_Copy(Handle));

    /// <summary>dict[key] as a borrowed reference, or a null reference when absent.</summary>
    public PyBorrowed GetDictItem(PyBorrowed key) => new(CPython.PyDict_GetItem(Handle, key.Handle));

    public nint TupleSize => CPython.PyTuple_Size(Handle);
    public PyBorrowed TupleItem(nint index) => new(CPython.PyTuple_GetItem(Handle, index));
    public nint ListSize => CPython.PyList_Size(Handle);
    public PyBorrowed ListItem(nint index) => new(CPython.PyList_GetItem(Handle, index));

    /// <summary>len(o), or -1 with a Python error pending.</summary>
    public nint Length => CPython.PyObject_Size(Handle);

    public PyRef GetIter() => PyRef.Check(CPython.PyObject_GetIter(Handle));

    /// <summary>The iterator's next item, or a null reference at its end; an exception the iterator raised is thrown.</summary>
    public PyRef IterNext()
    {
        PyRef item = PyRef.Steal(CPython.PyIter_Next(Handle));
        if (item.IsNull && Py.ErrorPending)
        {
            throw PythonException.Fetch();
        }
        return item;
    }

    /// <summary>isinstance(o, type); false, with the error cleared, when the check itself raises (a broken __instancecheck__).</summary>
    public bool IsInstance(PyBorrowed type)
    {
        int result = CPython.PyObject_IsInstance(Handle, type.Handle);
        if (result < 0)
        {
            CPython.PyErr_Clear();
        }
        return result == 1;
    }

    public bool IsTrue()
    {
        int result = CPython.PyObject_IsTrue(Handle);
        return result < 0 ? throw PythonException.Fetch() : result != 0;
    }

    public long AsLong()
    {
        long value = CPython.PyLong_AsLongLong(Handle);
        if (value == -1 && CPython.PyErr_Occurred() != 0)
        {
            throw PythonException.Fetch();
        }
        return value;
    }

    /// <summary>
    /// A str's bytes as latin-1 without copying when the str is ASCII (CPython keeps those
    /// as UTF-8 already); otherwise encodes to latin-1 into <paramref name="scratch"/>, or
    /// returns false if the text has characters beyond latin-1.
    /// </summary>
    public unsafe bool TryGetLatin1(ref byte[]? scratch, out ReadOnlySpan<byte> latin1)
    {
        nint size;
        byte* utf8 = CPython.PyUnicode_AsUTF8AndSize(Handle, &size);
        if (utf8 == null)
        {
            CPython.PyErr_Clear();
            latin1 = default;
            return false;
        }
        var span = new ReadOnlySpan<byte>(utf8, (int)size);
        if (!System.Text.Ascii.IsValid(span))
        {
            if (scratch is null || scratch.Length < span.Length)
            {
                scratch = new byte[Math.Max(256, span.Length)];
            }
            // Latin-1 code points above 0x7F are the two-byte UTF-8 sequences C2 xx and C3 xx.
            int n = 0;
            for (int i = 0; i < span.Length; i++)
            {
                byte b = span[i];
                if (b < 0x80)
                {
                    scratch[n++] = b;
                }
                else if ((b == 0xC2 || b == 0xC3) && i + 1 < span.Length)
                {
                    scratch[n++] = (byte)(((b & 0x1F) << 6) | (span[++i] & 0x3F));
                }
                else
                {
                    latin1 = default;
                    return false;
                }
            }
            latin1 = scratch.AsSpan(0, n);
            return true;
        }
        latin1 = span;
        return true;
    }

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
