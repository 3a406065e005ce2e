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
        string typeName = "Exception", message = "", traceback = "";
        try
        {
            using PyRef name = typeRef.Borrow().GetAttr("__name__");
            typeName = name.Borrow().AsString();
            if (!valueRef.IsNull)
            {
                using PyRef text = PyRef.Check(CPython.PyObject_Str(valueRef.Handle));
                message = text.Borrow().AsString();
            }
            traceback = Py.FormatException(typeRef.Borrow(), valueRef.Borrow(), tbRef.Borrow());
        }
        catch (PythonException)
        {
            // Formatting failed (a broken __str__, say): the type name alone still tells the story.
            CPython.PyErr_Clear();
        }
        return new PythonException(typeName, message, traceback, typeRef, valueRef, tbRef);
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
