using System.Buffers.Binary;
using System.Text;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>One piece of a SentencePiece model.</summary>
/// <param name="Text">The piece.</param>
/// <param name="Score">Its score (log probability for Unigram, merge rank for BPE models).</param>
/// <param name="Type">SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.</param>
internal sealed record SentencePiece(string Text, float Score, int Type);

/// <summary>
/// The few facts about a SentencePiece <c>ModelProto</c> that Microsoft.ML.Tokenizers does not expose:
/// the pieces with their scores and types, the pad id and which pieces are control tokens. Read with a minimal protobuf walker
/// that also rejects truncated or non-protobuf files with a clear message.
/// </summary>
internal sealed class SentencePieceModelInfo
{
    private const int NormalPieceType = 1;
    private const int ControlPieceType = 3;

    public int PieceCount { get; private init; }
    public int? UnknownId { get; private init; }
    public int? BosId { get; private init; }
    public int? EosId { get; private init; }
    public int? PadId { get; private init; }
    public IReadOnlySet<int> ControlIds { get; private init; } = new HashSet<int>();
    /// <summary>Every piece in id order (GGUF export writes them all).</summary>
    public IReadOnlyList<SentencePiece> Pieces { get; private init; } = Array.Empty<SentencePiece>();
    /// <summary>The normalizer's <c>add_dummy_prefix</c>: a space is put before the text.</summary>
    public bool AddDummyPrefix { get; private init; } = true;

    public static SentencePieceModelInfo Parse(ReadOnlySpan<byte> model, string source)
    {
        // TrainerSpec defaults (sentencepiece_model.proto): unk 0, bos 1, eos 2, pad -1 (none).
        long unk = 0, bos = 1, eos = 2, pad = -1;
        int pieces = 0;
        bool addDummyPrefix = true; // NormalizerSpec's default
        var control = new HashSet<int>();
        var all = new List<SentencePiece>();
        var reader = new ProtoReader(model, source);
        while (!reader.AtEnd)
        {
            var (field, wire) = reader.ReadTag();
            if (field == 1 && wire == 2)
            {
                var piece = new ProtoReader(reader.ReadBytes(), source);
                string text = string.Empty;
                float score = 0;
                int type = NormalPieceType;
                while (!piece.AtEnd)
                {
                    var (f, w) = piece.ReadTag();
                    if (f == 1 && w == 2) text = Encoding.UTF8.GetString(piece.ReadBytes());
                    else if (f == 2 && w == 5) score = piece.ReadFloat();
                    else if (f == 3 && w == 0) { type = (int)piece.ReadVarint(); if (type == ControlPieceType) control.Add(pieces); }
                    else piece.Skip(w);
                }
                all.Add(new SentencePiece(text, score, type));
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
            else if (field == 3 && wire == 2)
            {
                var normalizer = new ProtoReader(reader.ReadBytes(), source);
                while (!normalizer.AtEnd)
                {
                    var (f, w) = normalizer.ReadTag();
                    if (f == 3 && w == 0) addDummyPrefix = normalizer.ReadVarint() != 0;
                    else normalizer.Skip(w);
                }
            }
            else reader.Skip(wire);
        }
        if (pieces == 0)
            throw new InvalidDataException($"{source}: not a SentencePiece model (no pieces found).");
        int? Id(long v) => v >= 0 && v < pieces ? (int)v : null;
        return new SentencePieceModelInfo
        {
            PieceCount = pieces, Pieces = all, AddDummyPrefix = addDummyPrefix, UnknownId = Id(unk), BosId = Id(bos), EosId = Id(eos), PadId = Id(pad), ControlIds = control,
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

        public float ReadFloat()
        {
            int start = _pos;
            Advance(4);
            return BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(start, 4));
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
