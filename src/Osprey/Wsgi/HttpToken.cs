namespace Osprey.Wsgi;

/// <summary>
/// RFC 9110 §5.6.2 <c>token</c>: header field names, methods, Forwarded parameter names. One table
/// for every layer that checks one (the response headers an application sets, the request heads
/// both engines refuse, the Forwarded header).
/// </summary>
public static class HttpToken
{
    private static readonly bool[] s_tokenChars = Build();

    private static bool[] Build()
    {
        var table = new bool[256];
        foreach (char c in "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        {
            table[c] = true;
        }
        return table;
    }

    public static bool IsTokenChar(byte b) => s_tokenChars[b];

    /// <summary>A non-empty run of token characters.</summary>
    public static bool IsToken(ReadOnlySpan<byte> text)
    {
        foreach (byte b in text)
        {
            if (!s_tokenChars[b])
            {
                return false;
            }
        }
        return !text.IsEmpty;
    }

    /// <summary>A non-empty run of token characters.</summary>
    public static bool IsToken(ReadOnlySpan<char> text)
    {
        foreach (char c in text)
        {
            if (c >= 0x80 || !s_tokenChars[c])
            {
                return false;
            }
        }
        return !text.IsEmpty;
    }
}
