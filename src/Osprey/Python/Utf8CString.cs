using System.Buffers;
using System.Text;

namespace Osprey.Python;

/// <summary>
/// A NUL-terminated UTF-8 copy of a .NET string for C-API functions that take <c>const char*</c>
/// (module, attribute and error-message names). Short strings use the caller's stack scratch;
/// long ones rent, so a long message cannot overflow the stack.
/// </summary>
internal ref struct Utf8CString
{
    private byte[]? _rented;
    private readonly Span<byte> _bytes;

    public Utf8CString(string text, Span<byte> scratch)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length) + 1;
        Span<byte> buffer = max <= scratch.Length ? scratch : (_rented = ArrayPool<byte>.Shared.Rent(max));
        int length = Encoding.UTF8.GetBytes(text, buffer);
        buffer[length] = 0;
        _bytes = buffer[..(length + 1)];
    }

    /// <summary>Lets <c>fixed (byte* p = name)</c> pin the terminated bytes.</summary>
    public readonly ref byte GetPinnableReference() => ref _bytes[0];

    public void Dispose()
    {
        if (_rented is not null)
        {
            ArrayPool<byte>.Shared.Return(_rented);
            _rented = null;
        }
    }
}
