using Osprey.Logging;
using Osprey.Python;

namespace Osprey.Supervision;

/// <summary>
/// <c>--reload</c>, for development, as gunicorn's: once a second the worker looks at the
/// modification time of every file its Python has imported (and of <c>--reload-extra-file</c>s), and
/// when one changes it asks the master to replace it. The replacement imports the new code and is
/// ready before this worker stops, so no request fails; if the new code does not import, this worker
/// goes on serving the old code and the next change is tried again.
/// </summary>
internal static class CodeReloader
{
    // Source files rather than their bytecode caches, as gunicorn watches them.
    private const string ModuleFiles = """
        import sys

        def module_files():
            files = []
            for module in list(sys.modules.values()):
                name = getattr(module, "__file__", None)
                if not isinstance(name, str):
                    continue
                if name.endswith((".pyc", ".pyo")):
                    name = name[:-1]
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    continue
                files.append(name)
            return "\n".join(files)
        """;

    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    // What File.GetLastWriteTimeUtc returns for a file that does not exist.
    private static readonly DateTime Missing = DateTime.FromFileTimeUtc(0);

    public static void Start(IReadOnlyList<string> extraFiles, Action<string> changed)
    {
        var thread = new Thread(() => Watch(extraFiles, changed)) { IsBackground = true, Name = "osprey-reloader" };
        thread.Start();
    }

    private static void Watch(IReadOnlyList<string> extraFiles, Action<string> changed)
    {
        var python = new PythonThread();
        python.Attach();
        PyRef list;
        python.TakeGil();
        try
        {
            using PyRef ns = Py.Run(ModuleFiles, "<osprey reloader>");
            list = Py.GetItem(ns.Borrow(), "module_files\0"u8).NewRef();
        }
        finally
        {
            python.DropGil();
        }

        var stamps = new Dictionary<string, DateTime>(StringComparer.Ordinal);
        bool watching = false;
        while (true)
        {
            string files;
            python.TakeGil();
            try
            {
                using PyRef text = list.Borrow().CallNoArgs();
                files = text.Borrow().AsString();
            }
            catch (PythonException e)
            {
                e.ReleaseObjects();
                files = "";
            }
            finally
            {
                python.DropGil();
            }

            string? first = null;
            foreach (string file in files.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                string? hit = Check(stamps, file);
                first ??= hit;
            }
            foreach (string file in extraFiles)
            {
                string? hit = Check(stamps, file);
                first ??= hit;
            }
            if (first is not null)
            {
                changed(first);
            }
            if (!watching)
            {
                watching = true;
                Log.Debug($"--reload: watching {stamps.Count} files");
            }
            Thread.Sleep(Interval);
        }
    }

    /// <summary>Records the file's time; returns the file when it differs from the time seen before.</summary>
    private static string? Check(Dictionary<string, DateTime> stamps, string file)
    {
        // One stat per file: a missing file reads as the 1601 epoch, which stands for "gone". A file that
        // disappears (an editor's save by rename) counts as changed when it comes back.
        DateTime stamp = File.GetLastWriteTimeUtc(file);
        if (stamp == Missing)
        {
            stamp = DateTime.MinValue;
        }
        if (stamps.TryGetValue(file, out DateTime seen))
        {
            if (seen == stamp)
            {
                return null;
            }
            stamps[file] = stamp;
            return stamp == DateTime.MinValue ? null : file;
        }
        // First seen (at start, or a module imported since): the baseline.
        stamps[file] = stamp;
        return null;
    }
}
