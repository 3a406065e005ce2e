using System.Globalization;
using System.Text;

namespace Osprey.Supervision;

/// <summary>
/// What the master tells a worker it starts: which inherited descriptors are its channel and its
/// listeners, its slot and generation, and its request budget. Passed in one environment variable,
/// which the command line never shows and the worker removes before Python starts (a worker inside
/// the interpreter: before Osprey starts, see <see cref="InterpreterHost"/>), so neither
/// <c>--help</c> nor the application sees it.
/// </summary>
/// <param name="InInterpreter">The worker runs inside the interpreter's executable (<see cref="InterpreterHost"/>), which started Python already.</param>
public sealed record WorkerContext(int ChannelFd, IReadOnlyList<int> ListenerFds, int Slot, int Generation, int MaxRequests, int MasterPid, string PythonProbe,
    bool InInterpreter = false)
{
    public const string EnvironmentVariable = "OSPREY_WORKER";

    public string Encode()
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"channel={ChannelFd};slot={Slot};generation={Generation};max-requests={MaxRequests};master={MasterPid};in-interpreter={(InInterpreter ? 1 : 0)};");
        text.Append("python=").Append(Convert.ToBase64String(Encoding.UTF8.GetBytes(PythonProbe))).Append(";listeners=");
        text.AppendJoin(',', ListenerFds);
        return text.ToString();
    }

    /// <summary>The context of this process if the master started it as a worker; null for a master.</summary>
    public static WorkerContext? FromEnvironment()
    {
        string? text = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }
        Posix.Unsetenv(EnvironmentVariable);
        int channel = -1, slot = 0, generation = 0, maxRequests = 0, master = 0;
        bool inInterpreter = false;
        var listeners = new List<int>();
        string python = "";
        foreach (string part in text.Split(';'))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq < 0) continue;
            string value = part[(eq + 1)..];
            switch (part[..eq])
            {
                case "channel": channel = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "slot": slot = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "generation": generation = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "max-requests": maxRequests = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "master": master = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "in-interpreter": inInterpreter = value == "1"; break;
                case "python": python = Encoding.UTF8.GetString(Convert.FromBase64String(value)); break;
                case "listeners":
                    foreach (string fd in value.Split(',', StringSplitOptions.RemoveEmptyEntries))
                    {
                        listeners.Add(int.Parse(fd, CultureInfo.InvariantCulture));
                    }
                    break;
            }
        }
        if (channel < 0)
        {
            throw new InvalidOperationException($"{EnvironmentVariable} has no channel");
        }
        return new WorkerContext(channel, listeners, slot, generation, maxRequests, master, python, inInterpreter);
    }
}
