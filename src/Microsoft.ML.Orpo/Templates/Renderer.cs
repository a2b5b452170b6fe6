using System.Runtime.CompilerServices;
using System.Text;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>Evaluates a parsed template against variables, counting steps, call depth, output and allocation.</summary>
internal sealed partial class Renderer(TemplateLimits limits, Func<DateTimeOffset> clock)
{
    private enum Flow { Normal, Break, Continue }

    private StringBuilder output = new();
    private long steps;
    private long allocated;
    private int callDepth;

    public TemplateLimits Limits { get; } = limits;
    public Func<DateTimeOffset> Clock { get; } = clock;

    public string Render(IReadOnlyList<Node> nodes, Scope globals)
    {
        Exec(nodes, new Scope(globals));
        return output.ToString();
    }

    /// <summary>Counts <paramref name="count"/> evaluation steps.</summary>
    public void Step(Pos pos, long count = 1)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        steps += count;
        if (steps > Limits.MaxSteps) throw pos.Error($"The template exceeded the limit of {Limits.MaxSteps} evaluation steps");
    }

    /// <summary>Checks, before building it, that a string of <paramref name="length"/> characters is within the limits.</summary>
    public void ReserveString(long length, Pos pos)
    {
        if (length > Limits.MaxOutputLength)
            throw pos.Error($"A string of {length} characters exceeds the output limit of {Limits.MaxOutputLength}");
        Allocate(length, pos);
    }

    /// <summary>Checks, before building it, that a list of <paramref name="count"/> items is within the limits.</summary>
    public void ReserveList(long count, Pos pos)
    {
        if (count > Limits.MaxCollectionLength)
            throw pos.Error($"A list of {count} items exceeds the collection limit of {Limits.MaxCollectionLength}");
        Allocate(count, pos);
    }

    private void Allocate(long amount, Pos pos)
    {
        allocated += amount;
        if (allocated > Limits.MaxAllocated)
            throw pos.Error($"The template exceeded the allocation limit of {Limits.MaxAllocated} characters and items");
    }

    private void Write(string s, Pos pos)
    {
        if ((long)output.Length + s.Length > Limits.MaxOutputLength)
            throw pos.Error($"The output exceeds the limit of {Limits.MaxOutputLength} characters");
        output.Append(s);
    }

    private string Capture(IReadOnlyList<Node> body, Scope scope)
    {
        var saved = output;
        output = new StringBuilder();
        try
        {
            Exec(body, scope);
            return output.ToString();
        }
        finally { output = saved; }
    }

    private Flow Exec(IReadOnlyList<Node> nodes, Scope scope)
    {
        foreach (var node in nodes)
        {
            Step(node.Pos);
            switch (node)
            {
                case TextNode t: Write(t.Text, t.Pos); break;
                case OutputNode o: Write(Py.Str(Eval(o.Value, scope)), o.Pos); break;
                case IfNode i:
                    var branch = i.Else;
                    foreach (var (test, body) in i.Branches)
                        if (Py.Truthy(Eval(test, scope))) { branch = body; break; }
                    var flow = Exec(branch, scope);
                    if (flow != Flow.Normal) return flow;
                    break;
                case ForNode f: For(f, scope); break;
                case SetNode s: Assign(s.Target, Eval(s.Value, scope), scope); break;
                case SetBlockNode s: Assign(s.Target, ApplyFilters(s.Filters, Capture(s.Body, new Scope(scope)), scope), scope); break;
                case MacroNode m: scope.Set(m.Name, new Macro(m.Name, m.Parameters, m.Body, scope)); break;
                case FilterBlockNode f: Write(Py.Str(ApplyFilters(f.Filters, Capture(f.Body, new Scope(scope)), scope)), f.Pos); break;
                case WithNode w:
                    var inner = new Scope(scope);
                    foreach (var (target, value) in w.Assignments) Assign(target, Eval(value, inner), inner);
                    if (Exec(w.Body, inner) is var wf && wf != Flow.Normal) return wf;
                    break;
                case ScopeNode s:
                    if (Exec(s.Body, new Scope(scope)) is var sf && sf != Flow.Normal) return sf;
                    break;
                case LoopControlNode l: return l.IsBreak ? Flow.Break : Flow.Continue;
                default: throw node.Pos.Error($"Unsupported node {node.GetType().Name}");
            }
        }
        return Flow.Normal;
    }

    private object? ApplyFilters(IReadOnlyList<FilterExpr> filters, object? value, Scope scope)
    {
        foreach (var f in filters) value = Filters.Apply(this, f.Filter, value, EvalArgs(f.Args, f.Kwargs, scope), f.Pos);
        return value;
    }

    private void For(ForNode f, Scope scope)
    {
        var source = Iterate(Eval(f.Iterable, scope), f.Iterable.Pos);
        var items = new List<object?>(source.Count);
        foreach (var item in source)
        {
            if (f.Filter is not null)
            {
                Step(f.Pos);
                var test = new Scope(scope);
                Assign(f.Target, item, test);
                if (!Py.Truthy(Eval(f.Filter, test))) continue;
            }
            items.Add(item);
        }
        if (items.Count == 0)
        {
            Exec(f.Else, new Scope(scope));
            return;
        }
        var loop = new LoopInfo(items, 0);
        for (int i = 0; i < items.Count; i++)
        {
            Step(f.Pos);
            loop.Index = i;
            var body = new Scope(scope);
            Assign(f.Target, items[i], body);
            body.Set("loop", loop);
            if (Exec(f.Body, body) == Flow.Break) break;
        }
    }

    /// <summary>The items a for loop or filter visits: a list's or tuple's items, a string's characters, a dict's keys.</summary>
    public IReadOnlyList<object?> Iterate(object? value, Pos pos) => value switch
    {
        IList<object?> l => l.ToList(),
        Dict d => d.Keys.Cast<object?>().ToList(),
        string s => Py.CodePoints(s).Cast<object?>().ToList(),
        Undefined => Array.Empty<object?>(),
        Namespace n => n.Attributes.Keys.Cast<object?>().ToList(),
        _ => throw pos.Error($"'{Py.TypeName(value)}' object is not iterable"),
    };

    private void Assign(Expr target, object? value, Scope scope)
    {
        switch (target)
        {
            case Name n: scope.Set(n.Id, value); break;
            case TupleExpr t:
                var items = Iterate(value, t.Pos);
                if (items.Count != t.Items.Count)
                    throw t.Pos.Error($"Cannot unpack {items.Count} values into {t.Items.Count} names");
                for (int i = 0; i < items.Count; i++) Assign(t.Items[i], items[i], scope);
                break;
            case GetAttr { Target: Name ns } a:
                if (!scope.TryGet(ns.Id, out var holder) || holder is not Namespace space)
                    throw a.Pos.Error($"Cannot assign attribute '{a.Attribute}' on non-namespace object '{ns.Id}'");
                space.Attributes[a.Attribute] = value;
                break;
            default: throw target.Pos.Error("Invalid assignment target");
        }
    }

    public object? Eval(Expr expr, Scope scope)
    {
        Step(expr.Pos);
        switch (expr)
        {
            case Const c: return c.Value;
            case Name n: return scope.TryGet(n.Id, out var v) ? v : new Undefined($"'{n.Id}' is undefined");
            case ListExpr l:
                ReserveList(l.Items.Count, l.Pos);
                return l.Items.Select(i => Eval(i, scope)).ToList();
            case TupleExpr t: return t.Items.Select(i => Eval(i, scope)).ToArray();
            case DictExpr d:
                var dict = new Dict();
                foreach (var (k, val) in d.Items)
                {
                    var key = Eval(k, scope);
                    if (key is null or Undefined or IList<object?> or Dict or Namespace)
                        throw k.Pos.Error($"Unhashable or unsupported dict key of type '{Py.TypeName(key)}'");
                    dict[key] = Eval(val, scope);
                }
                return dict;
            case GetAttr a: return Members.GetAttribute(Eval(a.Target, scope), a.Attribute, a.Pos);
            case GetItem g:
                var target = Eval(g.Target, scope);
                if (g.Index is SliceExpr s)
                    return Members.Slice(this, target, EvalOpt(s.Start, scope), EvalOpt(s.Stop, scope), EvalOpt(s.Step, scope), s.Pos);
                return Members.GetItem(target, Eval(g.Index, scope), g.Pos);
            case CallExpr c: return Call(Eval(c.Target, scope), EvalArgs(c.Args, c.Kwargs, scope), c.Pos);
            case FilterExpr f: return Filters.Apply(this, f.Filter, f.Input is null ? null : Eval(f.Input, scope), EvalArgs(f.Args, f.Kwargs, scope), f.Pos);
            case TestExpr t:
                bool result = Tests.Apply(this, t.Test, Eval(t.Input, scope), t.Args.Select(a => Eval(a, scope)).ToList(), t.Pos);
                return result != t.Negated;
            case UnaryExpr u:
                var operand = Eval(u.Operand, scope);
                return u.Op == "not" ? !Py.Truthy(operand) : Operators.Unary(u.Op, operand, u.Pos);
            case BinaryExpr b:
                var left = Eval(b.Left, scope);
                if (b.Op == "and") return Py.Truthy(left) ? Eval(b.Right, scope) : left;
                if (b.Op == "or") return Py.Truthy(left) ? left : Eval(b.Right, scope);
                return Operators.Binary(this, b.Op, left, Eval(b.Right, scope), b.Pos);
            case CompareExpr c:
                var current = Eval(c.First, scope);
                foreach (var (op, operandExpr) in c.Rest)
                {
                    var next = Eval(operandExpr, scope);
                    if (!Operators.Compare(this, op, current, next, operandExpr.Pos)) return false;
                    current = next;
                }
                return true;
            case CondExpr c:
                if (Py.Truthy(Eval(c.Test, scope))) return Eval(c.Then, scope);
                return c.Else is null ? new Undefined("the inline if-expression evaluated to false and no else section was defined") : Eval(c.Else, scope);
            default: throw expr.Pos.Error($"Unsupported expression {expr.GetType().Name}");
        }
    }

    private object? EvalOpt(Expr? e, Scope scope) => e is null ? null : Eval(e, scope);

    private Args EvalArgs(IReadOnlyList<Expr> args, IReadOnlyList<(string Name, Expr Value)> kwargs, Scope scope) =>
        new(args.Select(a => Eval(a, scope)).ToList(), kwargs.Select(k => new KeyValuePair<string, object?>(k.Name, Eval(k.Value, scope))).ToList());

    public object? Call(object? callee, Args args, Pos pos) => callee switch
    {
        Builtin b => b.Body(this, args, pos),
        BoundMethod m => Members.CallMethod(this, m, args, pos),
        Macro m => CallMacro(m, args, pos),
        Undefined u => throw pos.Error(u.Description),
        _ => throw pos.Error($"'{Py.TypeName(callee)}' object is not callable"),
    };

    private string CallMacro(Macro macro, Args args, Pos pos)
    {
        if (args.Positional.Count > macro.Parameters.Count)
            throw pos.Error($"macro '{macro.Name}' takes not more than {macro.Parameters.Count} argument(s)");
        if (++callDepth > Limits.MaxCallDepth)
            throw pos.Error($"Macro calls nest deeper than the limit of {Limits.MaxCallDepth}");
        try
        {
            var scope = new Scope(macro.Closure);
            var named = args.Named.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
            foreach (var key in named.Keys)
                if (!macro.Parameters.Any(p => p.Name == key))
                    throw pos.Error($"macro '{macro.Name}' takes no keyword argument '{key}'");
            for (int i = 0; i < macro.Parameters.Count; i++)
            {
                var (name, def) = macro.Parameters[i];
                if (i < args.Positional.Count)
                {
                    if (named.ContainsKey(name)) throw pos.Error($"macro '{macro.Name}' got multiple values for argument '{name}'");
                    scope.Set(name, args.Positional[i]);
                }
                else if (named.TryGetValue(name, out var value)) scope.Set(name, value);
                else scope.Set(name, def is null ? new Undefined($"parameter '{name}' was not provided") : Eval(def, scope));
            }
            return Capture(macro.Body, scope);
        }
        finally { callDepth--; }
    }
}
