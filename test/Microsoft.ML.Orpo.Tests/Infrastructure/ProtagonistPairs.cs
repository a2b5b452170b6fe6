namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// A small preference set in stories260K's own domain: the same story continuation with a different protagonist
/// name preferred ("Sue") over the model's habitual one ("Lily"). Train and held-out sets share no prompt/sentence pair.
/// </summary>
internal static class ProtagonistPairs
{
    public const string Preferred = "Sue";
    public const string Habitual = "Lily";

    private static readonly string[] Openings =
    {
        "Once upon a time, there was a little girl named",
        "One day, a little girl named",
        "There was a girl named",
        "Once upon a time, in a big forest, there lived a girl named",
        "Once upon a time, there was a kind girl named",
        "In a small house, there lived a little girl named",
    };

    private static readonly string[] Continuations =
    {
        " {0}. She loved to play outside in the park.",
        " {0}. She liked to read books with her mom.",
        " {0}. She had a red ball and a big dog.",
        " {0}. {0} wanted to go to the park with her friend.",
        " {0}. She was very happy and liked to sing.",
        " {0}. {0} saw a bird in the sky.",
        " {0}. She wanted to help her dad in the garden.",
        " {0}. {0} liked to eat cake with her friends.",
        " {0}. One day, she found a shiny stone.",
    };

    public sealed record Pair(string Prompt, string Chosen, string Rejected);

    /// <summary>All opening x continuation combinations, split deterministically into train and held-out.</summary>
    public static (List<Pair> Train, List<Pair> HeldOut) Create()
    {
        var train = new List<Pair>();
        var heldOut = new List<Pair>();
        for (int o = 0; o < Openings.Length; o++)
            for (int c = 0; c < Continuations.Length; c++)
            {
                var pair = new Pair(Openings[o], string.Format(Continuations[c], Preferred), string.Format(Continuations[c], Habitual));
                ((o + c) % 4 == 0 ? heldOut : train).Add(pair);
            }
        return (train, heldOut);
    }
}
