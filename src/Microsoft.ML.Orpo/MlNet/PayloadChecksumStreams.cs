using System.Security.Cryptography;

namespace Microsoft.ML.Orpo.MlNet;

// The payload's integrity envelope in a model zip: saving counts and hashes the bytes the transformer writes, so that
// Model.key can record their length and SHA-256; loading hands the transformer a stream bounded to that length and
// checks the hash afterwards, so a tampered or truncated payload is reported as such whatever the transformer read.

/// <summary>
/// The saving half of the payload's length and SHA-256 in a model zip: a write-only pass-through stream that counts
/// and hashes what goes through it; disposing it leaves the target open.
/// </summary>
internal sealed class HashingWriteStream(Stream inner) : Stream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _length;

    public (long Length, byte[] Hash) Finish() => (_length, _hash.GetHashAndReset());
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _length;
    public override long Position { get => _length; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        inner.Write(buffer);
        _hash.AppendData(buffer);
        _length += buffer.Length;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            inner.Flush();
        base.Dispose(disposing);
    }
}

/// <summary>
/// The loading half of the payload's length and SHA-256 in a model zip: a read-only stream over exactly
/// <c>length</c> bytes that hashes what is read; <see cref="VerifyRest"/> checks it.
/// </summary>
internal sealed class VerifyingReadStream(Stream inner, long length, byte[] expectedHash) : Stream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _position;
    private bool? _verified;

    /// <summary>Reads whatever the loader left, then compares the hash; false when the bytes do not match.</summary>
    public bool VerifyRest()
    {
        if (_verified is bool done)
            return done;
        var buffer = new byte[81920];
        while (Read(buffer, 0, buffer.Length) > 0)
        {
        }
        if (_position != length || inner.ReadByte() != -1)
            return (_verified = false).Value;
        _verified = CryptographicOperations.FixedTimeEquals(_hash.GetHashAndReset(), expectedHash);
        return _verified.Value;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => length;
    public override long Position { get => _position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_verified is not null)
            return 0;
        int want = (int)Math.Min(buffer.Length, length - _position);
        if (want <= 0)
            return 0;
        int got = inner.Read(buffer[..want]);
        if (got == 0)
            return 0; // truncated; VerifyRest reports it
        _hash.AppendData(buffer[..got]);
        _position += got;
        return got;
    }
}
