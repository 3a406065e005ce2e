using Osprey.Cli;
using Osprey.Supervision;

// Usage errors exit 2, as argparse (and so gunicorn) does; start-up failures exit non-zero with
// one line in the error log. No .NET stack trace reaches the user for either.
switch (CommandLine.Parse(args))
{
    case ParseOutcome.ShowHelp help:
        Console.Out.Write(help.Text);
        return 0;
    case ParseOutcome.ShowVersion version:
        Console.Out.WriteLine(version.Text);
        return 0;
    case ParseOutcome.Error error:
        Console.Error.WriteLine("usage: osprey [OPTIONS] [APP_MODULE]");
        Console.Error.WriteLine($"osprey: error: {error.Message}");
        return 2;
    case ParseOutcome.Run run:
        try
        {
            // The master starts workers as this same executable with the same arguments and a hidden
            // environment variable saying which inherited descriptors are theirs.
            return WorkerContext.FromEnvironment() is { } worker
                ? Server.Run(run.Options, ["osprey", .. args], worker)
                : Master.Run(run.Options, ["osprey", .. args]);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"osprey: internal error: {e.GetType().Name}: {e.Message}");
            return 70;
        }
    default:
        return 2;
}
