using System.Text;

namespace Osprey.Python;

/// <summary>
/// Constants and constructors for the Python objects Osprey makes. Every member needs the GIL,
/// and all of it is valid only after <see cref="PythonRuntime.Initialize"/>.
/// </summary>
public static unsafe class Py
{
    public static PyBorrowed None { get; private set; }
    public static PyBorrowed True { get; private set; }
    public static PyBorrowed False { get; private set; }
    public static PyBorrowed TypeError { get; private set; }
    public static PyBorrowed ValueError { get; private set; }
    public static PyBorrowed RuntimeError { get; private set; }
    public static PyBorrowed SystemError { get; private set; }
    public static PyBorrowed OSError { get; private set; }
    public static PyBorrowed StopIteration { get; private set; }
    public static PyBorrowed AssertionError { get; private set; }
    public static PyBorrowed BaseException { get; private set; }

    /// <summary>The list and tuple type objects (PyList_Type, PyTuple_Type are exported type objects, not pointers).</summary>
    public static nint ListType { get; private set; }
    public static nint TupleType { get; private set; }

    /// <summary>The type of methods implemented in C (builtin_function_or_method; PyCMethod_Type derives from it).</summary>
    public static PyBorrowed CFunctionType { get; private set; }

    /// <summary>The types of iter(list) and iter(tuple), whose next() runs no Python code.</summary>
    public static nint ListIteratorType { get; private set; }
    public static nint TupleIteratorType { get; private set; }

    private static PyRef s_formatException;

    internal static void BindConstants()
    {
        None = new PyBorrowed(PythonLibrary.Export("_Py_NoneStruct"));
        True = new PyBorrowed(PythonLibrary.Export("_Py_TrueStruct"));
        False = new PyBorrowed(PythonLibrary.Export("_Py_FalseStruct"));
        TypeError = ExceptionType("PyExc_TypeError");
        ValueError = ExceptionType("PyExc_ValueError");
        RuntimeError = ExceptionType("PyExc_RuntimeError");
        SystemError = ExceptionType("PyExc_SystemError");
        OSError = ExceptionType("PyExc_OSError");
        StopIteration = ExceptionType("PyExc_StopIteration");
        AssertionError = ExceptionType("PyExc_AssertionError");
        BaseException = ExceptionType("PyExc_BaseException");
        ListType = PythonLibrary.Export("PyList_Type");
        TupleType = PythonLibrary.Export("PyTuple_Type");
        CFunctionType = new PyBorrowed(PythonLibrary.Export("PyCFunction_Type"));
        ListIteratorType = PythonLibrary.Export("PyListIter_Type");
        TupleIteratorType = PythonLibrary.Export("PyTupleIter_Type");
    }

    internal static void BindTraceback()
    {
        using PyRef module = Import("traceback");
        s_formatException = module.Borrow().GetAttr("format_exception");
    }

    // PyExc_* are exported variables holding the type object's address.
    private static PyBorrowed ExceptionType(string symbol) => new(*(nint*)PythonLibrary.Export(symbol));

    public static PyRef Import(string module)
    {
        using var name = new Utf8CString(module, stackalloc byte[256]);
        fixed (byte* p = name)
        {
            return PyRef.Check(CPython.PyImport_ImportModule(p));
        }
    }

    public static PyRef Str(string text)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        byte[]? rented = null;
        Span<byte> buffer = max <= 512 ? stackalloc byte[512] : (rented = System.Buffers.ArrayPool<byte>.Shared.Rent(max));
        try
        {
            int n = Encoding.UTF8.GetBytes(text, buffer);
            fixed (byte* p = buffer)
            {
                return PyRef.Check(CPython.PyUnicode_FromStringAndSize(p, n));
            }
        }
        finally
        {
            if (rented is not null)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>A native str from bytes decoded as latin-1, as PEP 3333 wants for environ values.</summary>
    public static PyRef StrLatin1(ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            return PyRef.Check(CPython.PyUnicode_DecodeLatin1(p, bytes.Length, null));
        }
    }

    /// <summary>An interned str, for keys that live as long as the process (environ keys).</summary>
    public static PyRef Intern(string asciiText)
    {
        Span<byte> buffer = stackalloc byte[asciiText.Length + 1];
        buffer[Encoding.ASCII.GetBytes(asciiText, buffer)] = 0;
        fixed (byte* p = buffer)
        {
            return PyRef.Check(CPython.PyUnicode_InternFromString(p));
        }
    }

    public static PyRef Bytes(ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            return PyRef.Check(CPython.PyBytes_FromStringAndSize(p, bytes.Length));
        }
    }

    /// <summary>
    /// A copy as bytes of any object with the buffer protocol (bytearray, memoryview, array...), as a binary
    /// stream's write() takes them; TypeError for anything else (bytes(5) would be five zero bytes).
    /// </summary>
    public static PyRef BytesFromBuffer(PyBorrowed bytesLike)
    {
        using PyRef view = PyRef.Check(CPython.PyMemoryView_FromObject(bytesLike.Handle));
        return PyRef.Check(CPython.PyObject_Bytes(view.Handle));
    }

    /// <summary>A new bytes object of <paramref name="length"/> bytes for the caller to fill before anyone else sees it.</summary>
    public static PyRef NewBytes(int length, out Span<byte> contents)
    {
        PyRef bytes = PyRef.Check(CPython.PyBytes_FromStringAndSize(null, length));
        byte* data;
        nint size;
        CPython.PyBytes_AsStringAndSize(bytes.Handle, &data, &size);
        contents = new Span<byte>(data, length);
        return bytes;
    }

    public static PyRef List() => PyRef.Check(CPython.PyList_New(0));

    public static void Append(PyBorrowed list, PyBorrowed item)
    {
        if (CPython.PyList_Append(list.Handle, item.Handle) != 0)
        {
            throw PythonException.Fetch();
        }
    }

    public static void SetAttr(PyBorrowed o, string name, PyBorrowed value)
    {
        using var attribute = new Utf8CString(name, stackalloc byte[256]);
        fixed (byte* p = attribute)
        {
            if (CPython.PyObject_SetAttrString(o.Handle, p, value.Handle) != 0)
            {
                throw PythonException.Fetch();
            }
        }
    }

    /// <summary>The borrowed item under <paramref name="key"/>, or a null reference.</summary>
    public static PyBorrowed GetItem(PyBorrowed dict, ReadOnlySpan<byte> nulTerminatedKey)
    {
        fixed (byte* p = nulTerminatedKey)
        {
            return new PyBorrowed(CPython.PyDict_GetItemString(dict.Handle, p));
        }
    }

    /// <summary>
    /// Raises <paramref name="exception"/> (an exc_info triple's value) as the pending Python error;
    /// its traceback travels with it. False, raising nothing, when it is not an exception instance:
    /// PyErr_Restore trusts its arguments, and (None, None, None), what sys.exc_info() gives
    /// outside an except block, would crash the interpreter.
    /// </summary>
    public static bool RaiseException(PyBorrowed exception)
    {
        int isException = CPython.PyObject_IsInstance(exception.Handle, BaseException.Handle);
        if (isException != 1)
        {
            if (isException < 0)
            {
                CPython.PyErr_Clear();
            }
            return false;
        }
        using PyRef type = PyRef.Check(CPython.PyObject_Type(exception.Handle));
        CPython.PyErr_SetObject(type.Handle, exception.Handle);
        return true;
    }

    public static PyRef Int(long value) => PyRef.Check(CPython.PyLong_FromLongLong(value));

    public static PyRef Bool(bool value) => (value ? True : False).NewRef();

    public static PyRef Tuple(params ReadOnlySpan<PyBorrowed> items)
    {
        PyRef tuple = PyRef.Check(CPython.PyTuple_New(items.Length));
        for (int i = 0; i < items.Length; i++)
        {
            CPython.Py_IncRef(items[i].Handle);
            CPython.PyTuple_SetItem(tuple.Handle, i, items[i].Handle);
        }
        return tuple;
    }

    public static PyRef Dict() => PyRef.Check(CPython.PyDict_New());

    public static void SetItem(PyBorrowed dict, PyBorrowed key, PyBorrowed value)
    {
        if (CPython.PyDict_SetItem(dict.Handle, key.Handle, value.Handle) != 0)
        {
            throw PythonException.Fetch();
        }
    }

    public static void SetError(PyBorrowed type, string message)
    {
        using var text = new Utf8CString(message, stackalloc byte[256]);
        fixed (byte* p = text)
        {
            CPython.PyErr_SetString(type.Handle, p);
        }
    }

    public static bool ErrorPending => CPython.PyErr_Occurred() != 0;

    /// <summary>Runs Python source as a module body in a fresh namespace and returns that namespace.</summary>
    public static PyRef Run(string source, string filename, PyBorrowed globals = default)
    {
        byte[] code = Encoding.UTF8.GetBytes(source + "\0");
        byte[] file = Encoding.UTF8.GetBytes(filename + "\0");
        PyRef ns = globals.IsNull ? Dict() : globals.NewRef();
        try
        {
            if (globals.IsNull)
            {
                using PyRef builtins = Import("builtins");
                fixed (byte* key = "__builtins__\0"u8)
                {
                    CPython.PyDict_SetItemString(ns.Handle, key, builtins.Handle);
                }
            }
            fixed (byte* c = code)
            fixed (byte* f = file)
            {
                using PyRef compiled = PyRef.Check(CPython.Py_CompileString(c, f, CPython.Py_file_input));
                using PyRef result = PyRef.Check(CPython.PyEval_EvalCode(compiled.Handle, ns.Handle, ns.Handle));
            }
            return ns;
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <summary>traceback.format_exception joined: the text Python itself would print.</summary>
    internal static string FormatException(PyBorrowed type, PyBorrowed value, PyBorrowed traceback)
    {
        if (s_formatException.IsNull)
        {
            return "";
        }
        using PyRef args = Tuple(type, value.IsNull ? None : value, traceback.IsNull ? None : traceback);
        using PyRef lines = s_formatException.Borrow().Call(args.Borrow());
        var text = new StringBuilder();
        nint count = CPython.PyList_Size(lines.Handle);
        for (nint i = 0; i < count; i++)
        {
            // A message or a source line may hold lone surrogates (a file name that was not UTF-8).
            text.Append(new PyBorrowed(CPython.PyList_GetItem(lines.Handle, i)).AsStringForLog());
        }
        return text.ToString().TrimEnd('\n');
    }
}
