namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// The few facts about a SentencePiece <c>ModelProto</c> that Microsoft.ML.Tokenizers does not expose:
/// the piece count, the pad id and which pieces are control tokens. Read with a minimal protobuf walker
/// that also rejects truncated or non-protobuf files with a clear message.
/// </summary>
internal sealed class SentencePieceModelInfo
{
    private const int ControlPieceType = 3;

    public int PieceCount { get; private init; }
    public int? UnknownId { get; private init; }
    public int? BosId { get; private init; }
    public int? EosId { get; private init; }
    public int? PadId { get; private init; }
    public IReadOnlySet<int> ControlIds { get; private init; } = new HashSet<int>();

    public static SentencePieceModelInfo Parse(ReadOnlySpan<byte> model, string source)
    {
        // TrainerSpec defaults (sentencepiece_model.proto): unk 0, bos 1, eos 2, pad -1 (none).
        long unk = 0, bos = 1, eos = 2, pad = -1;
        int pieces = 0;
        var control = new HashSet<int>();
        var reader = new ProtoReader(model, source);
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadTag();
            if (field == 1 && wire == 2)
            {
                var piece = new ProtoReader(reader.ReadBytes(), source);
                while (!piece.AtEnd)
                {
                    var (f, w) = piece.ReadTag();
                    if (f == 3 && w == 0) { if (piece.ReadVarint() == ControlPieceType) control.Add(pieces); }
                    else piece.Skip(w);
                }
                pieces++;
            }
            else if (field == 2 && wire == 2)
            {
                var trainer = new ProtoReader(reader.ReadBytes(), source);
                while (!trainer.AtEnd)
                {
                    var (f, w) = trainer.ReadTag();
                    if (w == 0 && f is >= 40 and <= 43)
                    {
                        long v = trainer.ReadVarint();
                        if (f == 40) unk = v; else if (f == 41) bos = v; else if (f == 42) eos = v; else pad = v;
                    }
                    else trainer.Skip(w);
                }
            }
            else reader.Skip(wire);
        }
        if (pieces == 0)
            throw new InvalidDataException($"{source}: not a SentencePiece model (no pieces found).");
        int? Id(long v) => v >= 0 && v < pieces ? (int)v : null;
        return new SentencePieceModelInfo
        {
            PieceCount = pieces, UnknownId = Id(unk), BosId = Id(bos), EosId = Id(eos), PadId = Id(pad), ControlIds = control,
        };
    }

    private ref struct ProtoReader
    {
        private readonly ReadOnlySpan<byte> _data;
        private readonly string _source;
        private int _pos;

        public ProtoReader(ReadOnlySpan<byte> data, string source)
        {
            _data = data;
            _source = source;
            _pos = 0;
        }

        public readonly bool AtEnd => _pos >= _data.Length;

        public (int Field, int Wire) ReadTag()
        {
            long tag = ReadVarint();
            int field = (int)(tag >> 3);
            if (field <= 0) throw Corrupt("invalid field number");
            return (field, (int)(tag & 7));
        }

        public long ReadVarint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length) throw Corrupt("truncated varint");
                byte b = _data[_pos++];
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return (long)value;
            }
            throw Corrupt("varint longer than 10 bytes");
        }

        public ReadOnlySpan<byte> ReadBytes()
        {
            long length = ReadVarint();
            if (length < 0 || length > _data.Length - _pos) throw Corrupt("length-delimited field runs past the end");
            var slice = _data.Slice(_pos, (int)length);
            _pos += (int)length;
            return slice;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: ReadVarint(); break;
                case 1: Advance(8); break;
                case 2: ReadBytes(); break;
                case 5: Advance(4); break;
                default: throw Corrupt($"unsupported wire type {wire}");
            }
        }

        private void Advance(int count)
        {
            if (count > _data.Length - _pos) throw Corrupt("truncated fixed-width field");
            _pos += count;
        }

        private readonly InvalidDataException Corrupt(string problem) =>
            new($"{_source}: not a valid SentencePiece model ({problem} at byte {_pos}).");
    }
}
