/*
 * Runs bench/overhead.py inside an interpreter embedded through libpython3.X.so, the way Osprey's
 * workers (and uWSGI's python3 plugin) run applications, instead of in /usr/bin/python3. Debian's
 * python3 executable links CPython statically; the shared library is measurably slower (see
 * bench/README.md, "Embedded CPython is slower than /usr/bin/python3"), and this tells by how much
 * for each benchmark app. Arguments go to overhead.py.
 *
 * build: gcc -O2 $(/usr/bin/python3-config --includes) bench/embedded/embedded.c \
 *            -o /tmp/embedded $(/usr/bin/python3-config --ldflags --embed)
 * run:   taskset -c 0 /tmp/embedded -n 5000 flask django hello
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    Py_Initialize();
    PyObject *args = PyList_New(0);
    PyObject *first = PyUnicode_FromString("overhead.py");
    PyList_Append(args, first);
    Py_DECREF(first);
    for (int i = 1; i < argc; i++) {
        PyObject *arg = PyUnicode_DecodeFSDefault(argv[i]);
        PyList_Append(args, arg);
        Py_DECREF(arg);
    }
    PySys_SetObject("argv", args);
    Py_DECREF(args);

    /* overhead.py sits two levels up from this file's folder, as in the repository. */
    char path[4096];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (slash) *slash = '\0'; else strcpy(path, ".");
    strncat(path, "/../overhead.py", sizeof path - strlen(path) - 1);

    FILE *script = fopen(path, "r");
    if (!script) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    PyObject *globals = PyDict_New();
    PyDict_SetItemString(globals, "__name__", PyUnicode_FromString("__main__"));
    PyDict_SetItemString(globals, "__file__", PyUnicode_FromString(path));
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    PyObject *result = PyRun_FileEx(script, path, Py_file_input, globals, globals, 1);
    int rc = 0;
    if (!result) {
        /* sys.exit(0) from overhead.py's main is a SystemExit: not a failure. */
        if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
            PyErr_Clear();
        } else {
            PyErr_Print();
            rc = 1;
        }
    }
    Py_XDECREF(result);
    Py_DECREF(globals);
    if (Py_FinalizeEx() < 0) rc = 1;
    return rc;
}
