using System.Runtime.InteropServices;
using Osprey.Cli;
using Osprey.Supervision;

namespace Osprey;

internal static class Program
{
    public static int Main(string[] args)
    {
        // First, before the console is used. Not in a copy the master started (a worker, --check-config's inside
        // the interpreter): its streams are the master's, open, and this process may be the interpreter, not osprey.
        if (Environment.GetEnvironmentVariable(WorkerContext.EnvironmentVariable) is null
            && Environment.GetEnvironmentVariable(InterpreterHost.CheckVariable) is null)
        {
            Posix.ReplaceClosedStandardStreams(args);
        }
        return Run(args);
    }

    /// <summary>
    /// The entry point of the Native AOT shared library (<c>osprey.so</c>), which a worker calls from
    /// inside the Python interpreter's own executable (<see cref="InterpreterHost"/>): the same as
    /// <see cref="Main"/>, given the arguments as an array of C strings (read with Marshal: unsafe code
    /// stays in Osprey.Python and the lean engine's syscall file).
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "osprey_main")]
    public static int HostedMain(int argc, nint argv)
    {
        var args = new string[argc];
        for (int i = 0; i < argc; i++)
        {
            args[i] = Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(argv, i * nint.Size)) ?? "";
        }
        return Run(args);
    }

    // Usage errors exit 2, as argparse (and so gunicorn) does; start-up failures exit non-zero with
    // one line in the error log. No .NET stack trace reaches the user for either.
    private static int Run(string[] args)
    {
        try
        {
            // The master starts workers with the same arguments (as this executable, or as this code
            // inside the Python interpreter: InterpreterHost) and hidden environment variables saying which inherited descriptors are theirs and what the
            // configuration file said (the master read it; a worker must not run it again).
            WorkerContext? worker = WorkerContext.FromEnvironment();
            ConfigArguments? config;
            ParseOutcome outcome;
            if (worker is not null)
            {
                IReadOnlyList<string>? fromMaster = ConfigFile.FromWorkerVariable(Environment.GetEnvironmentVariable(ConfigFile.WorkerVariable));
                HookSource? hooks = ConfigFile.HooksFromVariable(Environment.GetEnvironmentVariable(ConfigFile.HooksVariable));
                Posix.Unsetenv(ConfigFile.WorkerVariable);
                Posix.Unsetenv(ConfigFile.HooksVariable);
                config = fromMaster is null ? null : new ConfigArguments("(as the master read it)", fromMaster, []) { Hooks = hooks };
                outcome = CommandLine.Parse(args, config);
            }
            else
            {
                // What the file printed (and its traceback, if it failed): on stderr, as stdout is the settings' channel.
                // Not again by the copy of this command that --check-config runs inside the interpreter, unless it fails there.
                outcome = ConfigFile.ReadOptions(args, out config, out string? configOutput);
                if (configOutput is { Length: > 0 }
                    && (Environment.GetEnvironmentVariable(InterpreterHost.CheckVariable) is null || outcome is ParseOutcome.Error))
                {
                    Console.Error.WriteLine(configOutput);
                }
                ConfigFile.HandToWorkers(config);
            }
            if (outcome is not ParseOutcome.Run run)
            {
                return Finish(outcome);
            }
            if ((run.Options.CheckConfig || run.Options.PrintConfig) && worker is null)
            {
                // As gunicorn: --print-config prints, then checks the application as --check-config does
                // (in a copy of this command, which must not print again).
                if (run.Options.PrintConfig && Environment.GetEnvironmentVariable(InterpreterHost.CheckVariable) is null)
                {
                    Console.Out.Write(SettingsReport.Format(run.Options));
                    Console.Out.Flush();
                }
                return Server.CheckApplication(run.Options, ["osprey", .. args]);
            }
            return worker is not null
                ? Server.Run(run.Options, ["osprey", .. args], worker, config?.Hooks)
                : Master.Run(run.Options, ["osprey", .. args], config);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"osprey: internal error: {e.GetType().Name}: {e.Message}");
            return 70;
        }
    }

    private static int Finish(ParseOutcome outcome)
    {
        switch (outcome)
        {
            case ParseOutcome.ShowHelp help:
                Console.Out.Write(help.Text);
                return 0;
            case ParseOutcome.ShowVersion version:
                Console.Out.WriteLine(version.Text);
                return 0;
            case ParseOutcome.Error error:
                if (error.ExitCode == 2)
                {
                    Console.Error.WriteLine("usage: osprey [OPTIONS] [APP_MODULE]");
                }
                // 0 is a configuration file that ended the command successfully (sys.exit(0)): no error.
                Console.Error.WriteLine(error.ExitCode == 0 ? $"osprey: {error.Message}" : $"osprey: error: {error.Message}");
                return error.ExitCode;
            default:
                return 2;
        }
    }
}
