namespace Osprey.Tests.Infrastructure;

/// <summary>
/// The HTTP engines every integration test runs against, passed to the server as <c>--engine NAME</c>.
/// Use as <c>[Theory, MemberData(nameof(Engines.All), MemberType = typeof(Engines))]</c>.
/// </summary>
public static class Engines
{
    public static IReadOnlyList<string> Names { get; } = ["kestrel", "osprey"];

    public static TheoryData<string> All
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var name in Names)
            {
                data.Add(name);
            }
            return data;
        }
    }

    /// <summary>Each engine crossed with each of <paramref name="cases"/>, for <c>[Theory, MemberData]</c> data.</summary>
    public static TheoryData<string, string> Cross(IEnumerable<string> cases)
    {
        var data = new TheoryData<string, string>();
        foreach (var engine in Names)
        {
            foreach (var item in cases)
            {
                data.Add(engine, item);
            }
        }
        return data;
    }
}
