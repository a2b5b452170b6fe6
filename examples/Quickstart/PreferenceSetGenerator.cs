using System.Text.Encodings.Web;
using System.Text.Json;

namespace Quickstart;

/// <summary>
/// Builds the bundled preference set (data/stories-preferences) deterministically, in stories260K's own TinyStories
/// domain. Three preferences: a girl protagonist named "Sue" over the model's habitual "Lily", a boy named "Ben" over
/// its habitual "Tim", and endings where the toy is shared over endings where it is not. Each pair's two responses
/// are the same sentence except for that one preference. Held-out pairs are (opening, continuation) combinations that
/// never appear in training.
/// </summary>
internal static class PreferenceSetGenerator
{
    private static readonly string[] GirlOpenings =
    {
        "Once upon a time, there was a little girl named",
        "One day, a little girl named",
        "There was a girl named",
        "Once upon a time, in a big forest, there lived a girl named",
        "Once upon a time, there was a kind girl named",
        "In a small house, there lived a little girl named",
    };

    private static readonly string[] GirlContinuations =
    {
        " {0}. She loved to play outside in the park.",
        " {0}. She liked to read books with her mom.",
        " {0}. She had a red ball and a big dog.",
        " {0}. {0} wanted to go to the park with her friend.",
        " {0}. She was very happy and liked to sing.",
        " {0}. {0} saw a bird in the sky.",
        " {0}. She wanted to help her dad in the garden.",
        " {0}. {0} liked to eat cake with her friends.",
    };

    private static readonly string[] BoyOpenings =
    {
        "Once upon a time, there was a little boy named",
        "One day, a little boy named",
        "There was a boy named",
        "Once upon a time, in a small town, there lived a boy named",
        "Once upon a time, there was a happy boy named",
    };

    private static readonly string[] BoyContinuations =
    {
        " {0}. He loved to play with his toys.",
        " {0}. He liked to run and jump in the park.",
        " {0}. {0} had a big blue car.",
        " {0}. He wanted to build a tall tower.",
        " {0}. {0} went to the park with his mom.",
        " {0}. He liked to play with his dog.",
        " {0}. {0} saw a big tree in the garden.",
    };

    private static readonly (string Name, string Pronoun, string Possessive)[] Sharers =
    {
        ("Sue", "She", "Her"), ("Ben", "He", "His"), ("Sue", "She", "Her"), ("Ben", "He", "His"),
    };

    private static readonly string[] Toys = { "big red ball", "new doll", "shiny car", "little boat", "blue kite", "toy bear" };

    /// <summary>One pair with its preference kind (an extra JSON property the loader ignores).</summary>
    public sealed record Pair(string Kind, string Prompt, string Chosen, string Rejected);

    /// <summary>All pairs, split into train and held-out.</summary>
    public static (List<Pair> Train, List<Pair> HeldOut) Create()
    {
        var train = new List<Pair>();
        var heldOut = new List<Pair>();
        void Add(Pair pair, int i, int j) => ((i + j) % 4 == 0 ? heldOut : train).Add(pair);

        for (int i = 0; i < GirlOpenings.Length; i++)
            for (int j = 0; j < GirlContinuations.Length; j++)
                Add(new Pair("girl-name", GirlOpenings[i], string.Format(GirlContinuations[j], "Sue"), string.Format(GirlContinuations[j], "Lily")), i, j);
        for (int i = 0; i < BoyOpenings.Length; i++)
            for (int j = 0; j < BoyContinuations.Length; j++)
                Add(new Pair("boy-name", BoyOpenings[i], string.Format(BoyContinuations[j], "Ben"), string.Format(BoyContinuations[j], "Tim")), i, j);
        for (int i = 0; i < Sharers.Length; i++)
            for (int j = 0; j < Toys.Length; j++)
            {
                var (name, pronoun, possessive) = Sharers[i];
                string toy = Toys[j], thing = Toys[j].Split(' ')[^1];
                string prompt = i < 2
                    ? $"{name} had a {toy}. {possessive} friend wanted to play with it."
                    : $"One day, {name} got a {toy}. {possessive} little sister wanted to play too.";
                string other = i < 2 ? "friend" : "sister";
                string chosen = $" {pronoun} shared the {thing} with {possessive.ToLowerInvariant()} {other}. They played together and were very happy.";
                string rejected = $" {pronoun} did not want to share the {thing}. {possessive} {other} was sad and cried.";
                Add(new Pair("sharing", prompt, chosen, rejected), i, j);
            }
        // Interleave the kinds in the held-out file so its first rows cover every preference.
        heldOut = heldOut.GroupBy(p => p.Kind).SelectMany(g => g.Select((p, k) => (p, k))).OrderBy(t => t.k).Select(t => t.p).ToList();
        return (train, heldOut);
    }

    /// <summary>Writes train.jsonl and heldout.jsonl into <paramref name="directory"/>.</summary>
    public static (int Train, int HeldOut) Write(string directory)
    {
        var (train, heldOut) = Create();
        Directory.CreateDirectory(directory);
        WriteJsonl(Path.Combine(directory, "train.jsonl"), train);
        WriteJsonl(Path.Combine(directory, "heldout.jsonl"), heldOut);
        return (train.Count, heldOut.Count);
    }

    /// <summary>
    /// Writes the same pairs in TRL's conversational form (data/stories-chat-preferences): the prompt a one-message user
    /// list, chosen and rejected one-message assistant lists (their content without the leading space, which the chat
    /// template writes).
    /// </summary>
    public static (int Train, int HeldOut) WriteChat(string directory)
    {
        var (train, heldOut) = Create();
        Directory.CreateDirectory(directory);
        WriteJsonl(Path.Combine(directory, "train.jsonl"), train, chat: true);
        WriteJsonl(Path.Combine(directory, "heldout.jsonl"), heldOut, chat: true);
        return (train.Count, heldOut.Count);
    }

    private static object[] Turn(string role, string content) => [new { role, content }];

    private static void WriteJsonl(string path, IEnumerable<Pair> pairs, bool chat = false)
    {
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        using var writer = new StreamWriter(path, append: false, new System.Text.UTF8Encoding(false)) { NewLine = "\n" };
        foreach (var p in pairs)
            writer.WriteLine(chat
                ? JsonSerializer.Serialize(new { kind = p.Kind, prompt = Turn("user", p.Prompt), chosen = Turn("assistant", p.Chosen.TrimStart()), rejected = Turn("assistant", p.Rejected.TrimStart()) }, options)
                : JsonSerializer.Serialize(new { kind = p.Kind, prompt = p.Prompt, chosen = p.Chosen, rejected = p.Rejected }, options));
    }
}
