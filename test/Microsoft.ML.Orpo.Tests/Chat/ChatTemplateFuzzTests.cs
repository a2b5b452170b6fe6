using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>
/// Seeded fuzzing of the interpreter with hostile templates: the real templates with tokens deleted, duplicated,
/// swapped or replaced by random characters, and with runaway loops, recursion and string growth spliced in. Every
/// render must end in a result or a <see cref="TemplateException"/>: no other exception, no hang, bounded memory.
/// </summary>
[TestClass]
public sealed partial class ChatTemplateFuzzTests
{
    // ORPO_FUZZ_CASES / ORPO_FUZZ_SEED run a longer or different campaign locally.
    private static readonly int Cases = int.TryParse(Environment.GetEnvironmentVariable("ORPO_FUZZ_CASES"), out int n) ? n : 3000;
    private static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("ORPO_FUZZ_SEED"), out int s) ? s : 20261206;

    private static readonly string[] Hostile =
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ a ~ b }}{% endfor %}{% endfor %}",
        "{% macro m(n) %}{{ m(n) ~ m(n) }}{% endmacro %}{{ m(1) }}",
        "{{ 'x' * 999999999 }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(200) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(l=[0]) %}{% for i in range(99) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | sort }}",
        "{{ ((((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))) }}",
        "{% set ns = namespace() %}{% set ns.self = ns %}{{ ns }}{{ ns | tojson }}",
        "{{ range(99999) | map('string') | join('-') | length }}",
        "{{ messages * 99999 }}",
        "{{ (messages | tojson) * 9999 }}",
    ];

    [GeneratedRegex(@"\{\{-?|-?\}\}|\{%-?|-?%\}|\{#|#\}|\w+|\s+|.", RegexOptions.Singleline)]
    private static partial Regex TokenPattern();

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void HostileTemplatesEndInAResultOrATemplateException()
    {
        var rng = new Random(Seed);
        var sources = ChatTemplateFixtureTests.TemplateFiles().Select(File.ReadAllText).ToArray();
        var pool = sources.SelectMany(s => TokenPattern().Matches(s).Select(m => m.Value)).Distinct().ToArray();
        var limits = new TemplateLimits { MaxSteps = 50_000, MaxOutputLength = 1 << 18, MaxAllocated = 1 << 22, MaxCollectionLength = 10_000 };
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = new List<object?>
            {
                new Dict { ["role"] = "system", ["content"] = "Be brief." },
                new Dict { ["role"] = "user", ["content"] = "Hi <think>\n</think> 👋" },
                new Dict { ["role"] = "assistant", ["content"] = "Hello." },
                new Dict { ["role"] = "user", ["content"] = "Bye." },
            },
            ["add_generation_prompt"] = true,
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
        };
        var date = new DateTimeOffset(2025, 3, 9, 14, 5, 0, TimeSpan.Zero);

        int rendered = 0, rejected = 0;
        var slowest = TimeSpan.Zero;
        long mostAllocated = 0;
        var failures = new List<string>();
        var total = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            string source = Mutate(sources[rng.Next(sources.Length)], pool, rng);
            long before = GC.GetAllocatedBytesForCurrentThread();
            var watch = Stopwatch.StartNew();
            try
            {
                ChatTemplate.Parse(source, limits).Render(variables, () => date);
                rendered++;
            }
            catch (TemplateException) { rejected++; }
            catch (Exception e)
            {
                failures.Add($"case {i}: {e.GetType().Name}: {e.Message}\n{source}");
            }
            slowest = watch.Elapsed > slowest ? watch.Elapsed : slowest;
            mostAllocated = Math.Max(mostAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        TestContext.WriteLine($"seed {Seed}: {Cases} hostile templates in {total.Elapsed.TotalSeconds:F1} s: {rendered} rendered, {rejected} TemplateException, " +
                              $"{failures.Count} other exceptions; slowest {slowest.TotalMilliseconds:F0} ms, most allocated by one {mostAllocated / 1024} KiB");
        Assert.AreEqual(0, failures.Count, string.Join("\n\n", failures.Take(5)));
        Assert.IsTrue(slowest < TimeSpan.FromSeconds(5), $"slowest render {slowest}");
        Assert.IsTrue(mostAllocated < 256L << 20, $"one render allocated {mostAllocated} bytes");
        Assert.IsTrue(rendered > 0 && rejected > 0);
    }

    private static string Mutate(string source, string[] pool, Random rng)
    {
        var tokens = TokenPattern().Matches(source).Select(m => m.Value).ToList();
        int edits = 1 + rng.Next(4);
        for (int e = 0; e < edits && tokens.Count > 1; e++)
        {
            int at = rng.Next(tokens.Count);
            switch (rng.Next(7))
            {
                case 0: tokens.RemoveAt(at); break;
                case 1: tokens.Insert(at, tokens[rng.Next(tokens.Count)]); break;
                case 2:
                    int other = rng.Next(tokens.Count);
                    (tokens[at], tokens[other]) = (tokens[other], tokens[at]);
                    break;
                case 3: tokens.Insert(at, pool[rng.Next(pool.Length)]); break;
                case 4: tokens[at] = RandomText(rng); break;
                case 5: tokens.Insert(at, Hostile[rng.Next(Hostile.Length)]); break;
                default: tokens.RemoveRange(at, Math.Min(tokens.Count - at, 1 + rng.Next(20))); break;
            }
        }
        return string.Concat(tokens);
    }

    private static string RandomText(Random rng)
    {
        const string Alphabet = "{}%#-+()[]|.,:~*/'\"\\=!<> \n\tabcxyz019_é👋\u0000\uD800";
        var sb = new StringBuilder();
        for (int i = 1 + rng.Next(6); i > 0; i--)
            sb.Append(rng.Next(4) == 0 ? (char)rng.Next(0x10000) : Alphabet[rng.Next(Alphabet.Length)]);
        return sb.ToString();
    }
}
