using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Osprey.Python;

/// <summary>
/// Raw entry points of CPython's stable ABI. The library is resolved at run time
/// (<see cref="PythonLibrary"/>), so one build serves every CPython from 3.9 on.
/// Everything here is unsafe and unchecked: the rest of Osprey goes through <see cref="PyRef"/>,
/// <see cref="Gil"/> and friends.
/// </summary>
internal static unsafe partial class CPython
{
    /// <summary>The name every import below uses; <see cref="PythonLibrary"/> maps it to the real libpython.</summary>
    public const string Lib = "osprey-libpython";

    public const int Py_file_input = 257;

    public const ulong TPFLAGS_DEFAULT = 1UL << 18;
    public const ulong TPFLAGS_DISALLOW_INSTANTIATION = 1UL << 7;
    public const ulong TPFLAGS_LONG_SUBCLASS = 1UL << 24;
    public const ulong TPFLAGS_LIST_SUBCLASS = 1UL << 25;
    public const ulong TPFLAGS_TUPLE_SUBCLASS = 1UL << 26;
    public const ulong TPFLAGS_BYTES_SUBCLASS = 1UL << 27;
    public const ulong TPFLAGS_UNICODE_SUBCLASS = 1UL << 28;
    public const ulong TPFLAGS_DICT_SUBCLASS = 1UL << 29;

    public const int METH_VARARGS = 0x0001;
    public const int METH_KEYWORDS = 0x0002;
    public const int METH_NOARGS = 0x0004;
    public const int METH_O = 0x0008;

    public const int Py_tp_call = 50;
    public const int Py_tp_dealloc = 52;
    public const int Py_tp_doc = 56;
    public const int Py_tp_iter = 62;
    public const int Py_tp_iternext = 63;
    public const int Py_tp_methods = 64;
    public const int Py_tp_new = 65;
    public const int Py_tp_repr = 66;
    public const int Py_tp_getset = 73;
    public const int Py_tp_free = 74;

    [StructLayout(LayoutKind.Sequential)]
    public struct PyObjectHead
    {
        public nint RefCount;
        public nint Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PyTypeSlot
    {
        public int Slot;
        public nint Function;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PyTypeSpec
    {
        public byte* Name;
        public int BasicSize;
        public int ItemSize;
        public uint Flags;
        public PyTypeSlot* Slots;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PyMethodDef
    {
        public byte* Name;
        public nint Method;
        public int Flags;
        public byte* Doc;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PyGetSetDef
    {
        public byte* Name;
        public nint Get;
        public nint Set;
        public byte* Doc;
        public nint Closure;
    }

    // --- interpreter and threads -------------------------------------------------------------
    [LibraryImport(Lib)] public static partial void Py_SetProgramName(nint name);
    [LibraryImport(Lib)] public static partial void Py_InitializeEx(int initsigs);
    [LibraryImport(Lib)] public static partial int Py_IsInitialized();
    [LibraryImport(Lib)] public static partial byte* Py_GetVersion();
    [LibraryImport(Lib)] public static partial nint PyEval_SaveThread();
    [LibraryImport(Lib)] public static partial void PyEval_RestoreThread(nint threadState);
    [LibraryImport(Lib)] public static partial int PyGILState_Ensure();
    [LibraryImport(Lib)] public static partial void PyGILState_Release(int state);
    [LibraryImport(Lib)] public static partial int PyGILState_Check();
    [LibraryImport(Lib)] public static partial nuint PyThread_get_thread_ident();

    // --- reference counts and generic objects --------------------------------------------------
    [LibraryImport(Lib), SuppressGCTransition] public static partial void Py_IncRef(nint o);
    [LibraryImport(Lib)] public static partial void Py_DecRef(nint o);
    [LibraryImport(Lib)] public static partial nint PyObject_GetAttrString(nint o, byte* name);
    [LibraryImport(Lib)] public static partial nint PyObject_GetAttr(nint o, nint name);
    [LibraryImport(Lib)] public static partial int PyObject_SetAttrString(nint o, byte* name, nint value);
    [LibraryImport(Lib)] public static partial int PyObject_HasAttrString(nint o, byte* name);
    [LibraryImport(Lib)] public static partial nint PyObject_Call(nint callable, nint args, nint kwargs);
    [LibraryImport(Lib)] public static partial nint PyObject_CallObject(nint callable, nint args);
    [LibraryImport(Lib)] public static partial nint PyObject_Str(nint o);
    [LibraryImport(Lib)] public static partial nint PyObject_Repr(nint o);
    [LibraryImport(Lib)] public static partial int PyObject_IsTrue(nint o);
    [LibraryImport(Lib)] public static partial int PyObject_IsInstance(nint o, nint type);
    [LibraryImport(Lib)] public static partial nint PyObject_Type(nint o);
    [LibraryImport(Lib)] public static partial nint PyObject_GetIter(nint o);
    [LibraryImport(Lib)] public static partial nint PyIter_Next(nint o);
    [LibraryImport(Lib)] public static partial nint PyObject_Size(nint o);
    [LibraryImport(Lib)] public static partial int PyCallable_Check(nint o);
    [LibraryImport(Lib), SuppressGCTransition] public static partial ulong PyType_GetFlags(nint type);
    [LibraryImport(Lib)] public static partial nint PyType_FromSpec(PyTypeSpec* spec);
    [LibraryImport(Lib)] public static partial nint PyType_GenericAlloc(nint type, nint items);
    [LibraryImport(Lib)] public static partial nint PyType_GetSlot(nint type, int slot);
    [LibraryImport(Lib)] public static partial void PyObject_Free(nint p);

    // --- str, bytes ----------------------------------------------------------------------------
    [LibraryImport(Lib)] public static partial nint PyUnicode_DecodeLatin1(byte* s, nint size, byte* errors);
    [LibraryImport(Lib)] public static partial nint PyUnicode_FromStringAndSize(byte* s, nint size);
    [LibraryImport(Lib)] public static partial nint PyUnicode_InternFromString(byte* s);
    [LibraryImport(Lib)] public static partial byte* PyUnicode_AsUTF8AndSize(nint o, nint* size);
    [LibraryImport(Lib)] public static partial nint PyUnicode_AsLatin1String(nint o);
    [LibraryImport(Lib)] public static partial nint PyUnicode_AsEncodedString(nint o, byte* encoding, byte* errors);
    [LibraryImport(Lib)] public static partial nint PyBytes_FromStringAndSize(byte* s, nint size);
    [LibraryImport(Lib)] public static partial int PyBytes_AsStringAndSize(nint o, byte** buffer, nint* length);
    [LibraryImport(Lib)] public static partial nint PyMemoryView_FromObject(nint o);
    [LibraryImport(Lib)] public static partial nint PyObject_Bytes(nint o);

    // --- containers and numbers ----------------------------------------------------------------
    [LibraryImport(Lib)] public static partial nint PyDict_New();
    [LibraryImport(Lib)] public static partial nint PyDict_Copy(nint o);
    [LibraryImport(Lib)] public static partial int PyDict_SetItem(nint dict, nint key, nint value);
    [LibraryImport(Lib)] public static partial int PyDict_SetItemString(nint dict, byte* key, nint value);
    [LibraryImport(Lib)] public static partial nint PyDict_GetItemString(nint dict, byte* key);
    [LibraryImport(Lib)] public static partial nint PyDict_GetItem(nint dict, nint key);
    [LibraryImport(Lib)] public static partial nint PyTuple_New(nint size);
    [LibraryImport(Lib)] public static partial int PyTuple_SetItem(nint tuple, nint index, nint item);
    [LibraryImport(Lib)] public static partial nint PyTuple_GetItem(nint tuple, nint index);
    [LibraryImport(Lib)] public static partial nint PyTuple_Size(nint tuple);
    [LibraryImport(Lib)] public static partial nint PyList_New(nint size);
    [LibraryImport(Lib)] public static partial nint PyList_Size(nint list);
    [LibraryImport(Lib)] public static partial nint PyList_GetItem(nint list, nint index);
    [LibraryImport(Lib)] public static partial int PyList_Append(nint list, nint item);
    [LibraryImport(Lib)] public static partial int PyList_Insert(nint list, nint index, nint item);
    [LibraryImport(Lib)] public static partial nint PyLong_FromLongLong(long value);
    [LibraryImport(Lib)] public static partial long PyLong_AsLongLong(nint o);
    [LibraryImport(Lib)] public static partial nint PyBool_FromLong(int value);

    // --- errors --------------------------------------------------------------------------------
    [LibraryImport(Lib), SuppressGCTransition] public static partial nint PyErr_Occurred();
    [LibraryImport(Lib)] public static partial void PyErr_Fetch(nint* type, nint* value, nint* traceback);
    [LibraryImport(Lib)] public static partial void PyErr_Restore(nint type, nint value, nint traceback);
    [LibraryImport(Lib)] public static partial void PyErr_NormalizeException(nint* type, nint* value, nint* traceback);
    [LibraryImport(Lib)] public static partial void PyErr_SetString(nint type, byte* message);
    [LibraryImport(Lib)] public static partial void PyErr_SetObject(nint type, nint value);
    [LibraryImport(Lib)] public static partial void PyErr_Clear();
    [LibraryImport(Lib)] public static partial int PyErr_ExceptionMatches(nint type);
    [LibraryImport(Lib)] public static partial int PyException_SetTraceback(nint exception, nint traceback);

    // --- modules and code ----------------------------------------------------------------------
    [LibraryImport(Lib)] public static partial nint PyImport_ImportModule(byte* name);
    [LibraryImport(Lib)] public static partial nint PyImport_AddModule(byte* name);
    [LibraryImport(Lib)] public static partial nint PyModule_GetDict(nint module);
    [LibraryImport(Lib)] public static partial nint Py_CompileString(byte* source, byte* filename, int start);
    [LibraryImport(Lib)] public static partial nint PyEval_EvalCode(nint code, nint globals, nint locals);
    [LibraryImport(Lib)] public static partial nint PySys_GetObject(byte* name);
    [LibraryImport(Lib)] public static partial int PySys_SetObject(byte* name, nint value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nint TypeOf(nint o) => ((PyObjectHead*)o)->Type;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool HasTypeFlag(nint o, ulong flag) => (PyType_GetFlags(TypeOf(o)) & flag) != 0;
}
