namespace Osprey.Python;

/// <summary>
/// A Python exception surfaced in .NET, with the traceback text as Python prints it. The Python
/// error indicator is cleared once this is created, and <see cref="Restore"/> can put it back.
/// </summary>
public sealed class PythonException : Exception
{
    private PyRef _type;
    private PyRef _value;
    private PyRef _traceback;

    private PythonException(string typeName, string message, string traceback, PyRef type, PyRef value, PyRef tb)
        : base(message.Length > 0 ? $"{typeName}: {message}" : typeName)
    {
        TypeName = typeName;
        PythonMessage = message;
        Traceback = traceback;
        _type = type;
        _value = value;
        _traceback = tb;
    }

    public string TypeName { get; }
    public string PythonMessage { get; }
    /// <summary>"Traceback (most recent call last): ..." ending with the exception line, as traceback.format_exception gives it.</summary>
    public string Traceback { get; }

    /// <summary>Whether the exception passed through Python code (a frame added a traceback), rather than being raised by the C API call itself.</summary>
    public bool HasTraceback => !_traceback.IsNull;

    /// <summary>Turns the pending Python error into an exception. Needs the GIL.</summary>
    public static unsafe PythonException Fetch()
    {
        nint type, value, tb;
        CPython.PyErr_Fetch(&type, &value, &tb);
        if (type == 0)
        {
            return new PythonException("SystemError", "a C API call failed without setting a Python exception", "", default, default, default);
        }
        CPython.PyErr_NormalizeException(&type, &value, &tb);
        if (tb != 0 && value != 0)
        {
            CPython.PyException_SetTraceback(value, tb);
        }
        var typeRef = PyRef.Steal(type);
        var valueRef = PyRef.Steal(value);
        var tbRef = PyRef.Steal(tb);
        // Each part on its own: a message that cannot be converted (a __str__ that raises, say) must not cost
        // the log its traceback, which traceback.format_exception writes whatever str() does.
        string typeName = Describe(typeRef.Borrow(), static type =>
        {
            using PyRef name = type.GetAttr("__name__");
            return name.Borrow().AsStringForLog();
        }) ?? "Exception";
        string message = valueRef.IsNull ? "" : Describe(valueRef.Borrow(), static value =>
        {
            using PyRef text = PyRef.Check(CPython.PyObject_Str(value.Handle));
            return text.Borrow().AsStringForLog();
        }) ?? "<exception str() failed>";
        string traceback = "";
        try
        {
            traceback = Py.FormatException(typeRef.Borrow(), valueRef.Borrow(), tbRef.Borrow());
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
        }
        if (traceback.Length == 0)
        {
            // Formatting itself failed (or the traceback module is not bound yet): the exception line alone.
            traceback = message.Length > 0 ? $"{typeName}: {message}" : typeName;
        }
        return new PythonException(typeName, message, traceback, typeRef, valueRef, tbRef);
    }

    /// <summary>What <paramref name="describe"/> makes of <paramref name="o"/>, or null if that raised in Python (the error is cleared).</summary>
    private static string? Describe(PyBorrowed o, Func<PyBorrowed, string> describe)
    {
        try
        {
            return describe(o);
        }
        catch (PythonException e)
        {
            e.ReleaseObjects();
            return null;
        }
    }

    /// <summary>Hands the exception back to Python as the pending error (for returning NULL from a callback).</summary>
    public void Restore()
    {
        if (_type.IsNull)
        {
            Py.SetError(Py.SystemError, Message);
            return;
        }
        CPython.PyErr_Restore(_type.Detach(), _value.Detach(), _traceback.Detach());
    }

    /// <summary>Releases the Python objects held; needs the GIL.</summary>
    public void ReleaseObjects()
    {
        _type.Dispose();
        _value.Dispose();
        _traceback.Dispose();
    }
}
