namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>Canonical file names, and reading a tokenizer's files from a path.</summary>
internal static class TokenizerFiles
{
    public const string SentencePieceModel = "tokenizer.model";
    public const string TokenizerJson = "tokenizer.json";
    public const string TokenizerConfig = "tokenizer_config.json";

    public static string LookedFor => $"'{SentencePieceModel}' (SentencePiece) or '{TokenizerJson}' (Hugging Face byte-level BPE)";

    /// <summary>
    /// The files under their canonical names, plus the path each was read from (for error messages). A file path
    /// is taken as the tokenizer itself (a <c>.json</c> file as tokenizer.json, anything else as a SentencePiece
    /// model); a <c>tokenizer_config.json</c> next to it is read too.
    /// </summary>
    public static (Dictionary<string, byte[]> Files, Dictionary<string, string> Sources) Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string tokenizerPath, folder;
        if (File.Exists(path))
        {
            tokenizerPath = Path.GetFullPath(path);
            folder = Path.GetDirectoryName(tokenizerPath)!;
            if (Path.GetFileName(tokenizerPath) == TokenizerConfig)
                throw new ArgumentException(
                    $"'{path}' is a tokenizer_config.json; pass the tokenizer file ({LookedFor}) or its folder.", nameof(path));
        }
        else if (Directory.Exists(path))
        {
            folder = Path.GetFullPath(path);
            // A folder with tokenizer.model holds a SentencePiece model; its tokenizer.json (if any) is a conversion of it.
            tokenizerPath = new[] { SentencePieceModel, TokenizerJson }.Select(n => Path.Combine(folder, n)).FirstOrDefault(File.Exists)
                ?? throw new FileNotFoundException($"No tokenizer in folder '{folder}': looked for {LookedFor}.");
        }
        else if (Path.HasExtension(path))
            throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        else
            throw new DirectoryNotFoundException($"Tokenizer folder '{path}' does not exist.");

        string canonical = Path.GetExtension(tokenizerPath).Equals(".json", StringComparison.OrdinalIgnoreCase)
            ? TokenizerJson : SentencePieceModel;
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal) { [canonical] = File.ReadAllBytes(tokenizerPath) };
        var sources = new Dictionary<string, string>(StringComparer.Ordinal) { [canonical] = tokenizerPath };
        string configPath = Path.Combine(folder, TokenizerConfig);
        if (File.Exists(configPath))
        {
            files[TokenizerConfig] = File.ReadAllBytes(configPath);
            sources[TokenizerConfig] = configPath;
        }
        return (files, sources);
    }
}
