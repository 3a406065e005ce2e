using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Osprey.Python;

/// <summary>
/// The C# side of a Python object whose type is a <see cref="NativeType"/>. Python calls land in
/// these virtual methods with the GIL held; a .NET exception thrown from them becomes a Python
/// exception (a <see cref="PythonException"/> is re-raised as itself).
/// </summary>
public abstract class NativeObject
{
    /// <summary>tp_call: <c>obj(*args, **kwargs)</c>.</summary>
    public virtual PyRef Call(PyBorrowed args, PyBorrowed kwargs) => throw new PythonErrorException(Py.TypeError, "object is not callable");

    /// <summary>tp_iternext: the next item, or a null reference to stop.</summary>
    public virtual PyRef Next() => throw new PythonErrorException(Py.TypeError, "object is not an iterator");

    /// <summary>A method declared in the type's definition, by its index there.</summary>
    public virtual PyRef InvokeMethod(int index, PyBorrowed args) => throw new PythonErrorException(Py.TypeError, "no such method");

    /// <summary>A read-only attribute declared in the type's definition, by its index there.</summary>
    public virtual PyRef GetAttribute(int index) => throw new PythonErrorException(Py.TypeError, "no such attribute");

    /// <summary>Called when the Python object is freed.</summary>
    public virtual void Release()
    {
    }
}

/// <summary>A .NET exception that surfaces in Python as the given exception type and message.</summary>
public sealed class PythonErrorException(PyBorrowed type, string message) : Exception(message)
{
    public PyBorrowed PythonType { get; } = type;
}

public sealed record NativeMethod(string Name, string Doc = "");

public sealed record NativeTypeDefinition(string Name, string Doc)
{
    public IReadOnlyList<NativeMethod> Methods { get; init; } = [];
    public IReadOnlyList<string> Attributes { get; init; } = [];
    public bool Callable { get; init; }
    /// <summary>The object is its own iterator: tp_iter returns self, tp_iternext calls <see cref="NativeObject.Next"/>.</summary>
    public bool Iterator { get; init; }
    /// <summary>Creates the C# side when Python code instantiates the type; null forbids instantiation from Python.</summary>
    public Func<PyBorrowed, PyBorrowed, NativeObject>? Constructor { get; init; }
}

/// <summary>
/// A Python type made with PyType_FromSpec whose instances carry a GCHandle to a <see cref="NativeObject"/>.
/// Types live as long as the interpreter, so their specs are never freed.
/// </summary>
public sealed unsafe class NativeType
{
    private const int MaxMethods = 10;
    private static readonly int s_payloadOffset = sizeof(CPython.PyObjectHead);
    private static readonly Dictionary<nint, Func<PyBorrowed, PyBorrowed, NativeObject>> s_constructors = [];

    private readonly PyRef _type;

    public PyBorrowed Type => _type.Borrow();

    private NativeType(PyRef type) => _type = type;

    public static NativeType Create(NativeTypeDefinition definition)
    {
        if (definition.Methods.Count > MaxMethods)
        {
            throw new ArgumentException($"at most {MaxMethods} methods per native type", nameof(definition));
        }
        var slots = new List<CPython.PyTypeSlot>
        {
            new() { Slot = CPython.Py_tp_dealloc, Function = (nint)(delegate* unmanaged<nint, void>)&Dealloc },
            new() { Slot = CPython.Py_tp_doc, Function = (nint)Utf8(definition.Doc) },
        };
        if (definition.Callable)
        {
            slots.Add(new() { Slot = CPython.Py_tp_call, Function = (nint)(delegate* unmanaged<nint, nint, nint, nint>)&CallSlot });
        }
        if (definition.Iterator)
        {
            slots.Add(new() { Slot = CPython.Py_tp_iter, Function = (nint)(delegate* unmanaged<nint, nint>)&IterSelf });
            slots.Add(new() { Slot = CPython.Py_tp_iternext, Function = (nint)(delegate* unmanaged<nint, nint>)&NextSlot });
        }
        if (definition.Constructor is not null)
        {
            slots.Add(new() { Slot = CPython.Py_tp_new, Function = (nint)(delegate* unmanaged<nint, nint, nint, nint>)&NewSlot });
        }
        if (definition.Methods.Count > 0)
        {
            var methods = (CPython.PyMethodDef*)NativeMemory.AllocZeroed((nuint)(definition.Methods.Count + 1), (nuint)sizeof(CPython.PyMethodDef));
            for (int i = 0; i < definition.Methods.Count; i++)
            {
                methods[i].Name = Utf8(definition.Methods[i].Name);
                methods[i].Method = MethodTrampoline(i);
                methods[i].Flags = CPython.METH_VARARGS;
                methods[i].Doc = Utf8(definition.Methods[i].Doc);
            }
            slots.Add(new() { Slot = CPython.Py_tp_methods, Function = (nint)methods });
        }
        if (definition.Attributes.Count > 0)
        {
            var getset = (CPython.PyGetSetDef*)NativeMemory.AllocZeroed((nuint)(definition.Attributes.Count + 1), (nuint)sizeof(CPython.PyGetSetDef));
            for (int i = 0; i < definition.Attributes.Count; i++)
            {
                getset[i].Name = Utf8(definition.Attributes[i]);
                getset[i].Get = (nint)(delegate* unmanaged<nint, nint, nint>)&GetterSlot;
                getset[i].Closure = i;
            }
            slots.Add(new() { Slot = CPython.Py_tp_getset, Function = (nint)getset });
        }
        slots.Add(default);

        var slotArray = (CPython.PyTypeSlot*)NativeMemory.AllocZeroed((nuint)slots.Count, (nuint)sizeof(CPython.PyTypeSlot));
        for (int i = 0; i < slots.Count; i++)
        {
            slotArray[i] = slots[i];
        }
        var spec = (CPython.PyTypeSpec*)NativeMemory.AllocZeroed((nuint)sizeof(CPython.PyTypeSpec));
        spec->Name = Utf8(definition.Name);
        spec->BasicSize = s_payloadOffset + sizeof(nint);
        spec->Flags = (uint)(CPython.TPFLAGS_DEFAULT | (definition.Constructor is null ? CPython.TPFLAGS_DISALLOW_INSTANTIATION : 0));
        spec->Slots = slotArray;
        PyRef type = PyRef.Check(CPython.PyType_FromSpec(spec));
        if (definition.Constructor is not null)
        {
            s_constructors[type.Handle] = definition.Constructor;
        }
        return new NativeType(type);
    }

    /// <summary>A new Python instance whose calls go to <paramref name="target"/>.</summary>
    public PyRef Instantiate(NativeObject target) => Instantiate(_type.Handle, target);

    private static PyRef Instantiate(nint type, NativeObject target)
    {
        PyRef instance = PyRef.Check(CPython.PyType_GenericAlloc(type, 0));
        *(nint*)((byte*)instance.Handle + s_payloadOffset) = GCHandle.ToIntPtr(GCHandle.Alloc(target));
        return instance;
    }

    /// <summary>The C# object behind a Python object, if it is an instance of this type.</summary>
    public bool TryGetTarget<T>(PyBorrowed o, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out T? target) where T : NativeObject
    {
        if (!o.IsNull && CPython.TypeOf(o.Handle) == _type.Handle && Target(o.Handle) is T t)
        {
            target = t;
            return true;
        }
        target = null;
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static NativeObject? Target(nint self)
    {
        nint handle = *(nint*)((byte*)self + s_payloadOffset);
        return handle == 0 ? null : (NativeObject?)GCHandle.FromIntPtr(handle).Target;
    }

    private static byte* Utf8(string text)
    {
        int length = Encoding.UTF8.GetByteCount(text);
        var p = (byte*)NativeMemory.AllocZeroed((nuint)length + 1);
        Encoding.UTF8.GetBytes(text, new Span<byte>(p, length));
        return p;
    }

    /// <summary>Turns a .NET exception escaping a callback into the pending Python error.</summary>
    private static void RaiseInPython(Exception e)
    {
        switch (e)
        {
            case PythonException python:
                python.Restore();
                break;
            case PythonErrorException error:
                Py.SetError(error.PythonType, error.Message);
                break;
            default:
                Py.SetError(Py.SystemError, $"osprey internal error: {e.GetType().Name}: {e.Message}");
                break;
        }
    }

    [UnmanagedCallersOnly]
    private static void Dealloc(nint self)
    {
        nint* slot = (nint*)((byte*)self + s_payloadOffset);
        if (*slot != 0)
        {
            GCHandle handle = GCHandle.FromIntPtr(*slot);
            *slot = 0;
            try
            {
                (handle.Target as NativeObject)?.Release();
            }
            catch (Exception)
            {
                // A release hook must not take the interpreter down from a deallocator.
            }
            handle.Free();
        }
        nint type = CPython.TypeOf(self);
        var free = (delegate* unmanaged<nint, void>)CPython.PyType_GetSlot(type, CPython.Py_tp_free);
        free(self);
        CPython.Py_DecRef(type);
    }

    [UnmanagedCallersOnly]
    private static nint CallSlot(nint self, nint args, nint kwargs)
    {
        try
        {
            NativeObject target = Target(self) ?? throw new PythonErrorException(Py.RuntimeError, "uninitialised object");
            return target.Call(new PyBorrowed(args), new PyBorrowed(kwargs)).Detach();
        }
        catch (Exception e)
        {
            RaiseInPython(e);
            return 0;
        }
    }

    [UnmanagedCallersOnly]
    private static nint IterSelf(nint self)
    {
        CPython.Py_IncRef(self);
        return self;
    }

    [UnmanagedCallersOnly]
    private static nint NextSlot(nint self)
    {
        try
        {
            NativeObject target = Target(self) ?? throw new PythonErrorException(Py.RuntimeError, "uninitialised object");
            // A null result without an error set is how tp_iternext says StopIteration.
            return target.Next().Detach();
        }
        catch (Exception e)
        {
            RaiseInPython(e);
            return 0;
        }
    }

    [UnmanagedCallersOnly]
    private static nint NewSlot(nint type, nint args, nint kwargs)
    {
        try
        {
            if (!s_constructors.TryGetValue(type, out Func<PyBorrowed, PyBorrowed, NativeObject>? constructor))
            {
                throw new PythonErrorException(Py.TypeError, "cannot create instances of this type");
            }
            return Instantiate(type, constructor(new PyBorrowed(args), new PyBorrowed(kwargs))).Detach();
        }
        catch (Exception e)
        {
            RaiseInPython(e);
            return 0;
        }
    }

    [UnmanagedCallersOnly]
    private static nint GetterSlot(nint self, nint closure)
    {
        try
        {
            NativeObject target = Target(self) ?? throw new PythonErrorException(Py.RuntimeError, "uninitialised object");
            return target.GetAttribute((int)closure).Detach();
        }
        catch (Exception e)
        {
            RaiseInPython(e);
            return 0;
        }
    }

    private static nint InvokeMethod(int index, nint self, nint args)
    {
        try
        {
            NativeObject target = Target(self) ?? throw new PythonErrorException(Py.RuntimeError, "uninitialised object");
            return target.InvokeMethod(index, new PyBorrowed(args)).Detach();
        }
        catch (Exception e)
        {
            RaiseInPython(e);
            return 0;
        }
    }

    // PyCFunction gets no hint of which method it is, so each method index has its own entry point.
    private static nint MethodTrampoline(int index) => index switch
    {
        0 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method0,
        1 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method1,
        2 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method2,
        3 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method3,
        4 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method4,
        5 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method5,
        6 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method6,
        7 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method7,
        8 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method8,
        9 => (nint)(delegate* unmanaged<nint, nint, nint>)&Method9,
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };

    [UnmanagedCallersOnly] private static nint Method0(nint self, nint args) => InvokeMethod(0, self, args);
    [UnmanagedCallersOnly] private static nint Method1(nint self, nint args) => InvokeMethod(1, self, args);
    [UnmanagedCallersOnly] private static nint Method2(nint self, nint args) => InvokeMethod(2, self, args);
    [UnmanagedCallersOnly] private static nint Method3(nint self, nint args) => InvokeMethod(3, self, args);
    [UnmanagedCallersOnly] private static nint Method4(nint self, nint args) => InvokeMethod(4, self, args);
    [UnmanagedCallersOnly] private static nint Method5(nint self, nint args) => InvokeMethod(5, self, args);
    [UnmanagedCallersOnly] private static nint Method6(nint self, nint args) => InvokeMethod(6, self, args);
    [UnmanagedCallersOnly] private static nint Method7(nint self, nint args) => InvokeMethod(7, self, args);
    [UnmanagedCallersOnly] private static nint Method8(nint self, nint args) => InvokeMethod(8, self, args);
    [UnmanagedCallersOnly] private static nint Method9(nint self, nint args) => InvokeMethod(9, self, args);
}
