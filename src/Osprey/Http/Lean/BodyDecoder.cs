namespace Osprey.Http.Lean;

internal enum BodyFraming { None, ContentLength, Chunked }

internal enum DecodeStatus { Data, NeedMore, Done, Invalid }

/// <summary>
/// Strict request body framing (RFC 9112 §6, §7.1): a Content-Length count, or chunked coding
/// with nothing tolerated beyond the grammar (no bare CR or LF, no whitespace after a size unless
/// an extension follows, no size overflow). Hands out data without copying: each call returns
/// the next run of body bytes that lies in the input.
/// </summary>
internal struct BodyDecoder
{
    private const int MaxChunkExtensionBytes = 4096;
    private const int MaxTrailerBytes = 16 * 1024;

    private enum Chunk : byte { SizeStart, Size, SizeWhitespace, Extension, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerName, TrailerValue, TrailerLf, FinalLf, Done }

    private BodyFraming _framing;
    private long _remaining;
    private Chunk _chunk;
    private int _overhead;

    public readonly BodyFraming Framing => _framing;

    public readonly bool IsDone => _framing switch
    {
        BodyFraming.None => true,
        BodyFraming.ContentLength => _remaining == 0,
        _ => _chunk == Chunk.Done,
    };

    public void Start(BodyFraming framing, long contentLength)
    {
        _framing = framing;
        _remaining = framing == BodyFraming.ContentLength ? contentLength : 0;
        _chunk = Chunk.SizeStart;
        _overhead = 0;
    }

    /// <summary>
    /// Decodes from <paramref name="input"/>. <paramref name="consumed"/> bytes of it are used up;
    /// on <see cref="DecodeStatus.Data"/>, <paramref name="data"/> is body bytes within them.
    /// </summary>
    public DecodeStatus Decode(ReadOnlySpan<byte> input, out int consumed, out ReadOnlySpan<byte> data, int maxData = int.MaxValue)
    {
        data = default;
        consumed = 0;
        switch (_framing)
        {
            case BodyFraming.None:
                return DecodeStatus.Done;
            case BodyFraming.ContentLength:
                if (_remaining == 0)
                {
                    return DecodeStatus.Done;
                }
                if (input.IsEmpty)
                {
                    return DecodeStatus.NeedMore;
                }
                int take = (int)Math.Min(Math.Min(_remaining, input.Length), maxData);
                data = input[..take];
                consumed = take;
                _remaining -= take;
                return DecodeStatus.Data;
            default:
                return DecodeChunked(input, maxData, out consumed, out data);
        }
    }

    private DecodeStatus DecodeChunked(ReadOnlySpan<byte> input, int maxData, out int consumed, out ReadOnlySpan<byte> data)
    {
        data = default;
        int i = 0;
        while (true)
        {
            if (_chunk == Chunk.Done)
            {
                consumed = i;
                return DecodeStatus.Done;
            }
            if (_chunk == Chunk.Data)
            {
                if (i == input.Length)
                {
                    consumed = i;
                    return i > 0 ? DecodeStatus.Data : DecodeStatus.NeedMore;
                }
                int take = (int)Math.Min(Math.Min(_remaining, input.Length - i), maxData);
                data = input.Slice(i, take);
                _remaining -= take;
                if (_remaining == 0)
                {
                    _chunk = Chunk.DataCr;
                }
                consumed = i + take;
                return DecodeStatus.Data;
            }
            if (i == input.Length)
            {
                consumed = i;
                return DecodeStatus.NeedMore;
            }
            byte b = input[i++];
            switch (_chunk)
            {
                case Chunk.SizeStart:
                    _overhead = 0;
                    int first = HexValue(b);
                    if (first < 0)
                    {
                        return Invalid(i, out consumed);
                    }
                    _remaining = first;
                    _chunk = Chunk.Size;
                    break;
                case Chunk.Size:
                    int digit = HexValue(b);
                    if (digit >= 0)
                    {
                        if (_remaining > (long.MaxValue >> 4))
                        {
                            return Invalid(i, out consumed);
                        }
                        _remaining = (_remaining << 4) | (uint)digit;
                    }
                    else if (b == ';')
                    {
                        _chunk = Chunk.Extension;
                    }
                    else if (b is (byte)' ' or (byte)'\t')
                    {
                        _chunk = Chunk.SizeWhitespace;
                    }
                    else if (b == '\r')
                    {
                        _chunk = Chunk.SizeLf;
                    }
                    else
                    {
                        return Invalid(i, out consumed);
                    }
                    break;
                case Chunk.SizeWhitespace:
                    // RFC 9112 allows BWS only before an extension's ';'.
                    if (b == ';')
                    {
                        _chunk = Chunk.Extension;
                    }
                    else if (b is not ((byte)' ' or (byte)'\t') || ++_overhead > MaxChunkExtensionBytes)
                    {
                        return Invalid(i, out consumed);
                    }
                    break;
                case Chunk.Extension:
                    if (b == '\r')
                    {
                        _chunk = Chunk.SizeLf;
                    }
                    else if ((b < 0x20 && b != '\t') || b == 0x7F || ++_overhead > MaxChunkExtensionBytes)
                    {
                        return Invalid(i, out consumed);
                    }
                    break;
                case Chunk.SizeLf:
                    if (b != '\n')
                    {
                        return Invalid(i, out consumed);
                    }
                    _chunk = _remaining == 0 ? Chunk.TrailerStart : Chunk.Data;
                    _overhead = 0;
                    break;
                case Chunk.DataCr:
                    if (b != '\r')
                    {
                        return Invalid(i, out consumed);
                    }
                    _chunk = Chunk.DataLf;
                    break;
                case Chunk.DataLf:
                    if (b != '\n')
                    {
                        return Invalid(i, out consumed);
                    }
                    _chunk = Chunk.SizeStart;
                    break;
                case Chunk.TrailerStart:
                    if (b == '\r')
                    {
                        _chunk = Chunk.FinalLf;
                    }
                    else if (!Wsgi.HttpToken.IsTokenChar(b))
                    {
                        // A trailer line is a field line (RFC 9112 §7.1.2): a nameless line,
                        // obs-fold, or a request line hidden after the last chunk is refused.
                        return Invalid(i, out consumed);
                    }
                    else
                    {
                        _chunk = Chunk.TrailerName;
                    }
                    break;
                case Chunk.TrailerName:
                    if (b == ':')
                    {
                        _chunk = Chunk.TrailerValue;
                    }
                    else if (!Wsgi.HttpToken.IsTokenChar(b) || ++_overhead > MaxTrailerBytes)
                    {
                        return Invalid(i, out consumed);
                    }
                    break;
                case Chunk.TrailerValue:
                    if (b == '\r')
                    {
                        _chunk = Chunk.TrailerLf;
                    }
                    else if ((b < 0x20 && b != '\t') || b == 0x7F || ++_overhead > MaxTrailerBytes)
                    {
                        return Invalid(i, out consumed);
                    }
                    break;
                case Chunk.TrailerLf:
                    if (b != '\n')
                    {
                        return Invalid(i, out consumed);
                    }
                    _chunk = Chunk.TrailerStart;
                    break;
                case Chunk.FinalLf:
                    if (b != '\n')
                    {
                        return Invalid(i, out consumed);
                    }
                    _chunk = Chunk.Done;
                    break;
            }
        }
    }

    private static DecodeStatus Invalid(int at, out int consumed)
    {
        consumed = at;
        return DecodeStatus.Invalid;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}
