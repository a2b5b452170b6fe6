using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>Bad templates fail with a <see cref="TemplateException"/> naming what and where; limits fail fast, named.</summary>
[TestClass]
public sealed class ChatTemplateErrorTests
{
    private static readonly Dictionary<string, object?> NoVariables = new();

    private static TemplateException Fails(string template, TemplateLimits? limits = null) =>
        Assert.ThrowsExactly<TemplateException>(() => ChatTemplate.Parse(template, limits).Render(NoVariables));

    [TestMethod]
    [DataRow("{% extends 'base.html' %}", "Unsupported construct '{% extends %}'", 1, 4)]
    [DataRow("ok\n  {% include 'x' %}", "Unsupported construct '{% include %}'", 2, 6)]
    [DataRow("{% import 'x' as y %}", "Unsupported construct '{% import %}'", 1, 4)]
    [DataRow("{% call f() %}{% endcall %}", "Unsupported construct '{% call %}'", 1, 4)]
    [DataRow("{% for x in y recursive %}{% endfor %}", "Unsupported construct 'recursive' loop", 1, 15)]
    [DataRow("a\nb {{ x | nosuch }}", "Unsupported filter 'nosuch'", 2, 10)]
    [DataRow("{{ x is nosuch }}", "Unsupported test 'nosuch'", 1, 9)]
    [DataRow("{% frobnicate %}", "Unknown tag 'frobnicate'", 1, 4)]
    [DataRow("{{ f(*args) }}", "Unsupported construct '*args' / '**kwargs' in a call", 1, 6)]
    [DataRow("{{ '%s' % 1 }}", "Unsupported construct: printf-style string formatting with '%'", 1, 9)]
    public void AnUnsupportedConstructIsNamedWithItsPosition(string template, string what, int line, int column)
    {
        var e = Fails(template);
        StringAssert.StartsWith(e.Message, what);
        Assert.AreEqual((line, column), (e.Line, e.Column), e.Message);
        StringAssert.EndsWith(e.Message, $"(at line {line}, column {column})");
    }

    [TestMethod]
    [DataRow("{% if x %}no end", "Unexpected end of template: expected 'elif' or 'else' or 'endif'")]
    [DataRow("{{ 'unterminated }}", "Unterminated string literal")]
    [DataRow("{{ x ", "Unexpected end of template: the tag opened here is never closed")]
    [DataRow("{# never closed", "Missing end of comment tag '#}'")]
    [DataRow("{% endif %}", "Unexpected 'endif': no block is open")]
    [DataRow("{% break %}", "'break' outside of a loop")]
    [DataRow("{{ a b }}", "Expected VariableEnd, found 'b'")]
    [DataRow("{{ 1 $ 2 }}", "Unexpected character '$'")]
    [DataRow("{{ x.y }}", "'x' is undefined")]
    [DataRow("{{ 'a' + 1 }}", "unsupported operand type(s) for +: 'str' and 'int'")]
    [DataRow("{{ 1 // 0 }}", "integer division or modulo by zero")]
    [DataRow("{{ nothing() }}", "'nothing' is undefined")]
    [DataRow("{{ 3() }}", "'int' object is not callable")]
    [DataRow("{% for x in 3 %}{% endfor %}", "'int' object is not iterable")]
    [DataRow("{% set x = 1 %}{% set x.y = 2 %}", "Cannot assign attribute 'y' on non-namespace object 'x'")]
    [DataRow("{{ 9223372036854775807 + 1 }}", "Integer overflow in '+'")]
    [DataRow("{{ 'x'.format(1) }}", "'str object' has no attribute 'format'")]
    [DataRow("{{ strftime_now('%Q') }}", "Unsupported strftime directive '%Q'")]
    public void MalformedTemplatesAndRuntimeErrorsAreTemplateExceptions(string template, string message)
    {
        var e = Fails(template);
        StringAssert.StartsWith(e.Message, message);
        Assert.IsTrue(e.Line >= 1 && e.Column >= 1, e.Message);
        Assert.IsFalse(e.RaisedByTemplate);
    }

    [TestMethod]
    public void RaiseExceptionSurfacesTheTemplatesOwnMessage()
    {
        var e = Fails("{% if true %}\n  {{ raise_exception('Roles must alternate: ' ~ 2) }}{% endif %}");
        Assert.AreEqual("Roles must alternate: 2", e.Message);
        Assert.IsTrue(e.RaisedByTemplate);
        Assert.AreEqual((2, 21), (e.Line, e.Column));
    }

    [TestMethod]
    public void NestedRangesStopAtTheStepLimit()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var e = Fails("{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
            new TemplateLimits { MaxOutputLength = int.MaxValue, MaxAllocated = long.MaxValue });
        StringAssert.Contains(e.Message, "exceeded the limit of 1000000 evaluation steps");
        Assert.IsTrue(watch.Elapsed < TimeSpan.FromSeconds(10), watch.Elapsed.ToString());
    }

    [TestMethod]
    public void RangesAreBoundedAsInJinjasSandbox() =>
        StringAssert.StartsWith(Fails("{{ range(100001) | length }}").Message, "Range too big. The sandbox blocks ranges larger than 100000");

    [TestMethod]
    public void UnboundedMacroRecursionStopsAtTheCallDepthLimit()
    {
        var e = Fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        StringAssert.Contains(e.Message, "Macro calls nest deeper than the limit of 64");
    }

    [TestMethod]
    public void DeepMacroRecursionWithDeepBodiesDoesNotOverflowTheStack()
    {
        string body = string.Concat(Enumerable.Repeat("{% if true %}", 150)) + "{{ f(n + 1) }}" + string.Concat(Enumerable.Repeat("{% endif %}", 150));
        var e = Fails("{% macro f(n) %}" + body + "{% endmacro %}{{ f(0) }}", new TemplateLimits { MaxCallDepth = 10_000 });
        StringAssert.Contains(e.Message, "nests too deeply");
    }

    [TestMethod]
    [DataRow("{{ 'x' * 1000000000 }}", "exceeds the output limit")]
    [DataRow("{% for i in range(100000) %}{{ 'abcdefghij' * 10 }}{% endfor %}", "The output exceeds the limit")]
    [DataRow("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "exceeds the output limit")]
    [DataRow("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "exceeds the collection limit")]
    [DataRow("{% set ns = namespace(s='ab') %}{% for i in range(100000) %}{% set ns.t = ns.s * 1000000 %}{% endfor %}", "exceeded the allocation limit")]
    public void HugeOutputFailsFastNamingTheLimit(string template, string message)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        StringAssert.Contains(Fails(template).Message, message);
        Assert.IsTrue(GC.GetAllocatedBytesForCurrentThread() - before < 1L << 30, "allocated under 1 GiB");
    }

    [TestMethod]
    public void DeeplyNestedSourceFailsAtTheNestingLimit()
    {
        StringAssert.Contains(Fails("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}").Message, "nesting exceeds the limit of 200");
        StringAssert.Contains(Fails(string.Concat(Enumerable.Repeat("{% if 1 %}", 5000))).Message, "nesting exceeds the limit of 200");
        StringAssert.Contains(Fails("{{ " + string.Concat(Enumerable.Repeat("not ", 5000)) + "1 }}").Message, "nesting exceeds the limit of 200");
    }
}
