using System.Text;

namespace Osprey.Http.Lean;

/// <summary>The <c>Date:</c> header line, formatted once a second by the loop rather than per response.</summary>
internal static class HttpDate
{
    private static byte[] s_line = Format(DateTimeOffset.UtcNow);
    private static long s_second;

    public static ReadOnlySpan<byte> HeaderLine => Volatile.Read(ref s_line);

    public static void Refresh()
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        long second = now.ToUnixTimeSeconds();
        if (second != s_second)
        {
            s_second = second;
            Volatile.Write(ref s_line, Format(now));
        }
    }

    private static byte[] Format(DateTimeOffset now) => Encoding.ASCII.GetBytes($"Date: {now:r}\r\n");
}
