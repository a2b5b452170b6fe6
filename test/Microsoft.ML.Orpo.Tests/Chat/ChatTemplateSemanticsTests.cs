using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>Jinja semantics beyond what the real templates use. Each expected string is what Python's jinja2 3.1.6
/// renders in transformers' configuration (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
/// transformers' tojson).</summary>
[TestClass]
public sealed class ChatTemplateSemanticsTests
{
    private static readonly (string Template, string Expected)[] Cases =
    [
        ("{% for x in [1,2,3] %}{{ loop.index }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}",
         "1/2/True/False/3;2/1/False/False/3;3/0/False/True/3;"),
        ("{% for x in 'abc' if x != 'b' %}{{ loop.index0 }}{{ x }}{{ loop.previtem | default('-') }}{% else %}none{% endfor %}",
         "0a-1ca"),
        ("{% for x in [] %}x{% else %}empty{% endfor %}",
         "empty"),
        ("{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }} {% endfor %}",
         "a=1 b=[2, 3] "),
        ("{% for i in range(10) %}{% if i is even %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}",
         "135"),
        ("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
         "10"),
        ("{% set x = 1 %}{% for i in range(3) %}{% set x = i %}{% endfor %}{{ x }}",
         "1"),
        ("{% set a, b = 1, 'two' %}{{ b }}{{ a }}",
         "two1"),
        ("{% set block %}  inner {{ 1 + 1 }}  {% endset %}[{{ block }}]",
         "[  inner 2  ]"),
        ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', punct='?') }}",
         "Hi Ann! Hi Bo?"),
        ("{{ [3, 1, 2] | sort | join(',') }} {{ ['b', 'A', 'c'] | sort(reverse=true) | join }} {{ [1, 2, 2, 1] | unique | list }}",
         "1,2,3 cbA [1, 2]"),
        ("{{ 'Hello World' | lower }} {{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ '  x  ' | trim }}|",
         "hello world Hello World Hello x|"),
        ("{{ 'a-b-c'.split('-') }} {{ 'a b  c'.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'x'.join(['1','2']) }}",
         "['a', 'b', 'c'] ['a', 'b', 'c'] ['a', 'b,c'] 1x2"),
        ("{{ '  pad\n'.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aaa'.replace('a', 'b', 2) }}",
         "pad|hi|TrueTrue|bba"),
        ("{{ [1, 2, 3, 4, 5][1:4] }} {{ [1, 2, 3, 4, 5][::-2] }} {{ 'hello'[-3:] }} {{ 'hello'[::-1] }} {{ [1,2,3][-1] }}",
         "[2, 3, 4] [5, 3, 1] llo olleh 3"),
        ("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 10 / 4 * 2 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 3.0 }}",
         "3 -4 2 3.5 1024 2.5 5.0 1e+20 0.30000000000000004 3.0"),
        ("{{ 1 ~ 'a' ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1 if false }}|{{ 'y' if 0 else 'n' }}",
         "1aNoneTrue ababab [1, 2] |n"),
        ("{{ x is defined }} {{ none is none }} {{ 3 is divisibleby 3 }} {{ 'a' is string }} {{ {} is mapping }} {{ 1 is number }} {{ true is boolean }} {{ 'ab' is iterable }} {{ 5 is odd }} {{ 'x' in 'xyz' }} {{ 2 not in [1] }}",
         "False True True True True True True True True True True"),
        ("{{ {'a': 1, 'b': 'x'} | tojson }} {{ [1, 'é', none, true, 1.5] | tojson }} {{ {'k': [1, {'j': 2}]} | tojson(indent=2) }}",
         "{\"a\": 1, \"b\": \"x\"} [1, \"é\", null, true, 1.5] {\n  \"k\": [\n    1,\n    {\n      \"j\": 2\n    }\n  ]\n}"),
        ("{{ [{'r': 'u', 'c': 1}, {'r': 'a', 'c': 2}, {'r': 'u', 'c': 3}] | selectattr('r', 'equalto', 'u') | map(attribute='c') | list }} {{ [1, 2, 3] | reject('odd') | list }} {{ ['a', 'b'] | map('upper') | join }}",
         "[1, 3] [2] AB"),
        ("{{ [] | first }}|{{ [4, 5] | last }} {{ 'abc' | length }} {{ {'a': 1} | length }} {{ '42' | int + 1 }} {{ '3.7' | float }} {{ 'x' | int }} {{ -3 | abs }} {{ 2.5 | round }} {{ 3.14159 | round(2) }}",
         "|5 3 1 43 3.7 0 3 2.0 3.14"),
        ("{{ undefined_thing | default('dflt') }} {{ '' | default('e', true) }} {{ 'text\nmore' | indent(2) }} {{ 'a&<b>' | escape }} {{ none }} {{ [none, true] }}",
         "dflt e text\n  more a&amp;&lt;b&gt; None [None, True]"),
        ("  {% if true %}\n    yes\n  {% endif %}\n{{ 'v' }}  \n  {#- comment -#}  tail  {%- raw %}{{ raw }}{% endraw %}\n",
         "    yes\nvtail{{ raw }}"),
        ("{{- '  a  ' -}}   \n  {{ 'b' }}\n{% if true -%}\n   c\n{%- endif %}\nd",
         "  a  b\ncd"),
        ("{% with a = 1 %}{{ a }}{% endwith %}{{ a is defined }} {{ {'x': 1}.get('y', 'no') }} {{ {'x': 1}.x }} {{ {'a': 1}.keys() | list }} {{ 'abc'[1] }}",
         "1False no 1 ['a'] b"),
        ("{% filter upper %}shout {{ 'it' }}{% endfilter %} {{ [1, 2, 3] | sum }} {{ [3, 9, 2] | max }} {{ 'x' == 'x' and 1 < 2 < 3 }} {{ not 1 or 0 }} {{ ('a', 'b') }} {{ (1,) }}",
         "SHOUT IT 6 9 True 0 ('a', 'b') (1,)"),
        ("{{ \"esc\\t\\\"q\\\" \\u00e9\\x41\" }} {{ 'it''s' }} {{ 1_000 + 0.5 }}",
         "esc\t\"q\" éA its 1000.5"),
    ];

    public static IEnumerable<object[]> CaseIndexes() => Enumerable.Range(0, Cases.Length).Select(i => new object[] { i });

    [TestMethod]
    [DynamicData(nameof(CaseIndexes))]
    public void RendersAsJinja2(int index)
    {
        var (template, expected) = Cases[index];
        Assert.AreEqual(expected, ChatTemplate.Parse(template).Render(new Dictionary<string, object?>()), template);
    }
}
