namespace LambdaSweep;

/// <summary>
/// A small preference set in stories260K's own domain (children's stories): the same story sentence with the
/// protagonist called "Sue" (chosen) instead of the model's habitual "Lily" (rejected). Every fourth
/// opening/sentence combination is held out for validation, so the two sets share no pair.
/// </summary>
internal static class NamePreferencePairs
{
    private static readonly string[] Openings =
    [
        "Once upon a time, there was a little girl named",
        "One day, a happy girl named",
        "There once was a small girl named",
        "Once upon a time, in a little town, there lived a girl named",
        "Long ago, there was a kind girl named",
        "In a big house by the sea, there lived a girl named",
    ];

    private static readonly string[] Sentences =
    [
        " {0}. She loved to play with her toys.",
        " {0}. She liked to draw pictures of the sun.",
        " {0}. She had a little cat and a big tree.",
        " {0}. {0} wanted to go to the beach with her mom.",
        " {0}. She was very kind and liked to help.",
        " {0}. {0} saw a big red ball in the park.",
        " {0}. She wanted to bake a cake with her dad.",
        " {0}. {0} liked to jump and run with her friends.",
        " {0}. One day, she found a pretty flower.",
    ];

    public sealed class Row
    {
        public string Prompt { get; set; } = "";
        public string Chosen { get; set; } = "";
        public string Rejected { get; set; } = "";
    }

    public static (List<Row> Train, List<Row> Validation) Create()
    {
        var train = new List<Row>();
        var validation = new List<Row>();
        for (int o = 0; o < Openings.Length; o++)
            for (int s = 0; s < Sentences.Length; s++)
            {
                var row = new Row { Prompt = Openings[o], Chosen = string.Format(Sentences[s], "Sue"), Rejected = string.Format(Sentences[s], "Lily") };
                ((o + s) % 4 == 0 ? validation : train).Add(row);
            }
        return (train, validation);
    }
}
