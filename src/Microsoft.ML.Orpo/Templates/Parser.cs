namespace Microsoft.ML.Orpo.Templates;

/// <summary>Parses Jinja tokens into an AST, with Jinja's operator precedence. Unknown tags, filters and tests fail
/// here, naming the construct and its position.</summary>
internal sealed class Parser
{
    private static readonly HashSet<string> Unsupported =
        ["extends", "block", "include", "import", "from", "call", "do", "autoescape", "trans", "pluralize", "print"];

    private readonly List<Token> tokens;
    private readonly int maxDepth;
    private int index;
    private int depth;
    private int loopDepth;
    // Inside an if statement (test and branches, not nested loop, macro or block bodies) an unknown filter or test
    // fails only when evaluated, as in Jinja >= 3.0 ("soft" frames).
    private bool soft;

    private Parser(List<Token> tokens, int maxDepth)
    {
        this.tokens = tokens;
        this.maxDepth = maxDepth;
    }

    public static IReadOnlyList<Node> Parse(string source, int maxDepth)
    {
        var parser = new Parser(Lexer.Tokenize(source), maxDepth);
        var (body, end) = parser.Body();
        if (end is not null) throw end.Pos.Error($"Unexpected '{end.Value}': no block is open");
        return body;
    }

    private Token Current => index < tokens.Count ? tokens[index] : new Token(TokenKind.End, "end of template", tokens.Count == 0 ? new Pos(1, 1) : tokens[^1].Pos);
    private Token Next() => tokens[index++];
    private bool IsOp(string op) => Current is { Kind: TokenKind.Operator } t && t.Value == op;
    private bool IsName(string name) => Current is { Kind: TokenKind.Name } t && t.Value == name;

    private Token Expect(TokenKind kind, string? value = null)
    {
        var t = Current;
        if (t.Kind != kind || (value is not null && t.Value != value))
            throw t.Pos.Error($"Expected {value ?? kind.ToString()}, found '{t.Value}'");
        index++;
        return t;
    }

    private void Enter(Pos pos)
    {
        if (++depth > maxDepth) throw pos.Error($"Template nesting exceeds the limit of {maxDepth}");
    }

    /// <summary>Parses nodes until a block tag whose name is in <paramref name="ends"/>; returns that tag's name token (its
    /// block-begin token already consumed) or null at the end of the template.</summary>
    private (List<Node> Body, Token? End) Body(params string[] ends)
    {
        var body = new List<Node>();
        while (Current.Kind != TokenKind.End)
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.Text:
                    body.Add(new TextNode(t.Pos, t.Value));
                    break;
                case TokenKind.VariableBegin:
                    body.Add(new OutputNode(t.Pos, TupleOrExpression()));
                    Expect(TokenKind.VariableEnd);
                    break;
                case TokenKind.BlockBegin:
                    var name = Current;
                    if (name.Kind == TokenKind.Name && ends.Contains(name.Value)) { index++; return (body, name); }
                    body.Add(Statement());
                    break;
                default:
                    throw t.Pos.Error($"Unexpected '{t.Value}'");
            }
        }
        if (ends.Length > 0) throw Current.Pos.Error($"Unexpected end of template: expected '{string.Join("' or '", ends)}'");
        return (body, null);
    }

    private List<Node> BodyUntil(string end)
    {
        var (body, _) = Body(end);
        EndTag();
        return body;
    }

    /// <summary>The end of a tag that opens a body; Jinja allows a colon before it, for Python's sake.</summary>
    private void BodyStart()
    {
        if (IsOp(":")) index++;
        Expect(TokenKind.BlockEnd);
    }

    private void EndTag()
    {
        if (Current.Kind == TokenKind.Name) index++; // Jinja allows a name after endmacro/endblock: ignore it
        Expect(TokenKind.BlockEnd);
    }

    private Node Statement()
    {
        var t = Expect(TokenKind.Name);
        Enter(t.Pos);
        try
        {
            switch (t.Value)
            {
                case "if": return If(t.Pos);
                case "for": return For(t.Pos);
                case "set": return Set(t.Pos);
                case "macro": return MacroDef(t.Pos);
                case "filter":
                    var filters = FilterChain(null);
                    BodyStart();
                    return new FilterBlockNode(t.Pos, filters, Hard(() => BodyUntil("endfilter")));
                case "with": return With(t.Pos);
                case "generation":
                    BodyStart();
                    return new ScopeNode(t.Pos, Hard(() => BodyUntil("endgeneration")));
                case "break" or "continue":
                    if (loopDepth == 0) throw t.Pos.Error($"'{t.Value}' outside of a loop");
                    Expect(TokenKind.BlockEnd);
                    return new LoopControlNode(t.Pos, t.Value == "break");
                case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endfilter" or "endwith" or "endgeneration" or "endraw":
                    throw t.Pos.Error($"Unexpected '{t.Value}': no block is open");
                default:
                    throw t.Pos.Error(Unsupported.Contains(t.Value)
                        ? $"Unsupported construct '{{% {t.Value} %}}'"
                        : $"Unknown tag '{t.Value}'");
            }
        }
        finally { depth--; }
    }

    private IfNode If(Pos pos)
    {
        bool outer = soft;
        soft = true;
        try { return IfBody(pos); }
        finally { soft = outer; }
    }

    private List<Node> Hard(Func<List<Node>> body)
    {
        bool outer = soft;
        soft = false;
        try { return body(); }
        finally { soft = outer; }
    }

    private IfNode IfBody(Pos pos)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        var test = Expression();
        while (true)
        {
            BodyStart();
            var (body, end) = Body("elif", "else", "endif");
            branches.Add((test, body));
            if (end!.Value == "elif") { test = Expression(); continue; }
            if (end.Value == "else")
            {
                BodyStart();
                return new IfNode(pos, branches, BodyUntil("endif"));
            }
            Expect(TokenKind.BlockEnd);
            return new IfNode(pos, branches, Array.Empty<Node>());
        }
    }

    private ForNode For(Pos pos)
    {
        var target = AssignTarget(allowAttribute: false);
        Expect(TokenKind.Name, "in");
        var iterable = TupleOrExpression(withCondition: false);
        Expr? filter = null;
        if (IsName("if")) { index++; filter = Expression(withCondition: false); }
        if (IsName("recursive")) throw Current.Pos.Error("Unsupported construct 'recursive' loop");
        BodyStart();
        loopDepth++;
        Token? end = null;
        var body = Hard(() =>
        {
            var (nodes, endTag) = Body("else", "endfor");
            end = endTag;
            return nodes;
        });
        loopDepth--;
        if (end!.Value == "else") BodyStart();
        else Expect(TokenKind.BlockEnd);
        var elseBody = end!.Value == "else" ? Hard(() => BodyUntil("endfor")) : new List<Node>();
        return new ForNode(pos, target, iterable, filter, body, elseBody);
    }

    private Node Set(Pos pos)
    {
        var target = AssignTarget(allowAttribute: true);
        if (IsOp("="))
        {
            index++;
            var value = TupleOrExpression();
            Expect(TokenKind.BlockEnd);
            return new SetNode(pos, target, value);
        }
        var filters = IsOp("|") ? FilterChain(null) : new List<FilterExpr>();
        BodyStart();
        return new SetBlockNode(pos, target, filters, Hard(() => BodyUntil("endset")));
    }

    private MacroNode MacroDef(Pos pos)
    {
        string name = Expect(TokenKind.Name).Value;
        var parameters = new List<(string, Expr?)>();
        Expect(TokenKind.Operator, "(");
        while (!IsOp(")"))
        {
            if (parameters.Count > 0) Expect(TokenKind.Operator, ",");
            if (IsOp(")")) break;
            string p = Expect(TokenKind.Name).Value;
            Expr? def = null;
            if (IsOp("=")) { index++; def = Expression(); }
            else if (parameters.Count > 0 && parameters[^1].Item2 is not null) throw Current.Pos.Error("non-default argument follows default argument");
            parameters.Add((p, def));
        }
        index++;
        BodyStart();
        int outerLoops = loopDepth;
        loopDepth = 0;
        var body = Hard(() => BodyUntil("endmacro"));
        loopDepth = outerLoops;
        return new MacroNode(pos, name, parameters, body);
    }

    private WithNode With(Pos pos)
    {
        var assignments = new List<(Expr, Expr)>();
        while (Current.Kind != TokenKind.BlockEnd && !IsOp(":"))
        {
            if (assignments.Count > 0) Expect(TokenKind.Operator, ",");
            var target = AssignTarget(allowAttribute: false);
            Expect(TokenKind.Operator, "=");
            assignments.Add((target, Expression()));
        }
        BodyStart();
        return new WithNode(pos, assignments, Hard(() => BodyUntil("endwith")));
    }

    private Expr AssignTarget(bool allowAttribute)
    {
        var first = Current;
        var items = new List<Expr>();
        bool paren = IsOp("(");
        if (paren) index++;
        do
        {
            if (items.Count > 0) index++;
            var t = Expect(TokenKind.Name);
            if (allowAttribute && IsOp(".") && items.Count == 0)
            {
                index++;
                var attr = Expect(TokenKind.Name);
                return new GetAttr(t.Pos, new Name(t.Pos, t.Value), attr.Value);
            }
            items.Add(new Name(t.Pos, t.Value));
        } while (IsOp(","));
        if (paren) Expect(TokenKind.Operator, ")");
        return items.Count == 1 && !paren ? items[0] : new TupleExpr(first.Pos, items);
    }

    // Expressions, lowest precedence first: conditional, or, and, not, comparisons, + -, ~, * / // %, **, unary,
    // then primary with postfix (.attr, [item], call) and filters / tests.

    private Expr Expression(bool withCondition = true)
    {
        Enter(Current.Pos);
        try
        {
            var expr = Or();
            if (!withCondition) return expr;
            while (IsName("if"))
            {
                var pos = Next().Pos;
                var test = Or();
                Expr? otherwise = null;
                if (IsName("else")) { index++; otherwise = Expression(); }
                expr = new CondExpr(pos, test, expr, otherwise);
            }
            return expr;
        }
        finally { depth--; }
    }

    /// <summary>An expression or an unparenthesised tuple (<c>a, b</c>), as in Jinja's <c>parse_tuple</c>.</summary>
    private Expr TupleOrExpression(bool withCondition = true)
    {
        var pos = Current.Pos;
        var first = Expression(withCondition);
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (IsOp(","))
        {
            index++;
            if (IsOp(")") || IsOp("]") || Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd) break;
            if (IsName("if")) break;
            items.Add(Expression(withCondition));
        }
        return new TupleExpr(pos, items);
    }

    private Expr Or()
    {
        var left = And();
        while (IsName("or")) { var p = Next().Pos; left = new BinaryExpr(p, "or", left, And()); }
        return left;
    }

    private Expr And()
    {
        var left = Not();
        while (IsName("and")) { var p = Next().Pos; left = new BinaryExpr(p, "and", left, Not()); }
        return left;
    }

    private Expr Not()
    {
        if (IsName("not"))
        {
            var p = Next().Pos;
            Enter(p);
            try { return new UnaryExpr(p, "not", Not()); }
            finally { depth--; }
        }
        return Compare();
    }

    private Expr Compare()
    {
        var pos = Current.Pos;
        var first = Math1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && Current.Value is "==" or "!=" or "<" or "<=" or ">" or ">=")
                rest.Add((Next().Value, Math1()));
            else if (IsName("in")) { index++; rest.Add(("in", Math1())); }
            else if (IsName("not") && index + 1 < tokens.Count && tokens[index + 1] is { Kind: TokenKind.Name, Value: "in" })
            {
                index += 2;
                rest.Add(("not in", Math1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(pos, first, rest);
    }

    private Expr Math1()
    {
        var left = Concat();
        while (IsOp("+") || IsOp("-")) { var t = Next(); left = new BinaryExpr(t.Pos, t.Value, left, Concat()); }
        return left;
    }

    private Expr Concat()
    {
        var left = Math2();
        while (IsOp("~")) { var t = Next(); left = new BinaryExpr(t.Pos, "~", left, Math2()); }
        return left;
    }

    private Expr Math2()
    {
        var left = Pow();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var t = Next(); left = new BinaryExpr(t.Pos, t.Value, left, Pow()); }
        return left;
    }

    private Expr Pow()
    {
        var left = Unary(true);
        while (IsOp("**")) { var t = Next(); left = new BinaryExpr(t.Pos, "**", left, Unary(true)); }
        return left;
    }

    private Expr Unary(bool withFilter)
    {
        Expr node;
        if (IsOp("-") || IsOp("+"))
        {
            var t = Next();
            Enter(t.Pos);
            try { node = new UnaryExpr(t.Pos, t.Value, Unary(false)); }
            finally { depth--; }
        }
        else node = Postfix(Primary());
        return withFilter ? FilterTail(node) : node;
    }

    private Expr Primary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Const(t.Pos, true),
                    "false" or "False" => new Const(t.Pos, false),
                    "none" or "None" => new Const(t.Pos, null),
                    _ => new Name(t.Pos, t.Value),
                };
            case TokenKind.String:
                string s = (string)t.Literal!;
                while (Current.Kind == TokenKind.String) s += (string)Next().Literal!;
                return new Const(t.Pos, s);
            case TokenKind.Integer or TokenKind.Float:
                return new Const(t.Pos, t.Literal);
            case TokenKind.Operator when t.Value == "(":
                if (IsOp(")")) { index++; return new TupleExpr(t.Pos, Array.Empty<Expr>()); }
                var inner = TupleOrExpression();
                Expect(TokenKind.Operator, ")");
                return inner;
            case TokenKind.Operator when t.Value == "[":
                var items = new List<Expr>();
                while (!IsOp("]"))
                {
                    if (items.Count > 0) Expect(TokenKind.Operator, ",");
                    if (IsOp("]")) break;
                    items.Add(Expression());
                }
                index++;
                return new ListExpr(t.Pos, items);
            case TokenKind.Operator when t.Value == "{":
                var pairs = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    if (pairs.Count > 0) Expect(TokenKind.Operator, ",");
                    if (IsOp("}")) break;
                    var key = Expression();
                    Expect(TokenKind.Operator, ":");
                    pairs.Add((key, Expression()));
                }
                index++;
                return new DictExpr(t.Pos, pairs);
            default:
                throw t.Pos.Error(t.Kind == TokenKind.End ? "Unexpected end of template" : $"Unexpected '{t.Value}'");
        }
    }

    private Expr Postfix(Expr node)
    {
        while (true)
        {
            if (IsOp("."))
            {
                var dot = Next();
                var t = Next();
                node = t.Kind switch
                {
                    TokenKind.Name => new GetAttr(dot.Pos, node, t.Value),
                    TokenKind.Integer => new GetItem(dot.Pos, node, new Const(t.Pos, t.Literal)),
                    _ => throw t.Pos.Error($"Expected an attribute name after '.', found '{t.Value}'"),
                };
            }
            else if (IsOp("["))
            {
                var open = Next();
                node = new GetItem(open.Pos, node, Subscript());
                Expect(TokenKind.Operator, "]");
            }
            else if (IsOp("(")) node = Call(node);
            else return node;
        }
    }

    private Expr Subscript()
    {
        var pos = Current.Pos;
        Expr? start = null, stop = null, step = null;
        if (IsOp("]")) return new TupleExpr(pos, Array.Empty<Expr>());
        if (!IsOp(":")) { start = TupleOrExpression(); if (!IsOp(":")) return start; }
        index++;
        if (!IsOp("]") && !IsOp(":")) stop = Expression();
        if (IsOp(":")) { index++; if (!IsOp("]")) step = Expression(); }
        return new SliceExpr(pos, start, stop, step);
    }

    private CallExpr Call(Expr target)
    {
        var open = Expect(TokenKind.Operator, "(");
        var (args, kwargs) = Arguments();
        return new CallExpr(open.Pos, target, args, kwargs);
    }

    private (List<Expr>, List<(string, Expr)>) Arguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!IsOp(")"))
        {
            if (args.Count + kwargs.Count > 0) Expect(TokenKind.Operator, ",");
            if (IsOp(")")) break;
            if (IsOp("*") || IsOp("**")) throw Current.Pos.Error("Unsupported construct '*args' / '**kwargs' in a call");
            if (Current.Kind == TokenKind.Name && index + 1 < tokens.Count && tokens[index + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                string key = Next().Value;
                index++;
                kwargs.Add((key, Expression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Current.Pos.Error("Positional argument follows keyword argument");
                args.Add(Expression());
            }
        }
        index++;
        return (args, kwargs);
    }

    private Expr FilterTail(Expr node)
    {
        while (true)
        {
            if (IsOp("|")) node = FilterChain(node)[^1];
            else if (IsName("is")) node = Test(node);
            else if (IsOp("(")) node = Call(node);
            else return node;
        }
    }

    /// <summary>One or more <c>| name(args)</c>; each filter takes the previous one as input.</summary>
    private List<FilterExpr> FilterChain(Expr? input)
    {
        var chain = new List<FilterExpr>();
        do
        {
            if (IsOp("|")) index++;
            var t = Expect(TokenKind.Name);
            string name = DottedName(t.Value);
            if (!soft && !Filters.IsKnown(name)) throw t.Pos.Error($"Unsupported filter '{name}'");
            var (args, kwargs) = IsOp("(") ? ArgumentsAfterParen() : (new List<Expr>(), new List<(string, Expr)>());
            var f = new FilterExpr(t.Pos, chain.Count == 0 ? input : chain[^1], name, args, kwargs);
            chain.Add(f);
        } while (IsOp("|"));
        return chain;
    }

    private (List<Expr>, List<(string, Expr)>) ArgumentsAfterParen()
    {
        index++;
        return Arguments();
    }

    private string DottedName(string name)
    {
        while (IsOp(".") && index + 1 < tokens.Count && tokens[index + 1].Kind == TokenKind.Name)
        {
            index++;
            name += "." + Next().Value;
        }
        return name;
    }

    private Expr Test(Expr input)
    {
        var isToken = Next();
        bool negated = false;
        if (IsName("not")) { index++; negated = true; }
        var t = Expect(TokenKind.Name);
        string name = DottedName(t.Value);
        if (!soft && !Tests.IsKnown(name)) throw t.Pos.Error($"Unsupported test '{name}'");
        var args = new List<Expr>();
        if (IsOp("("))
        {
            var (a, kw) = ArgumentsAfterParen();
            if (kw.Count > 0) throw t.Pos.Error($"Keyword arguments to test '{name}' are not supported");
            args = a;
        }
        else if (Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                 || IsOp("[") || IsOp("{") || IsOp("-") || IsOp("+"))
        {
            if (!(Current.Kind == TokenKind.Name && Current.Value is "else" or "or" or "and" or "if" or "in" or "is" or "not"))
            {
                if (IsOp("-") || IsOp("+")) throw Current.Pos.Error($"Expected an argument for test '{name}'");
                args.Add(Postfix(Primary()));
            }
        }
        return new TestExpr(isToken.Pos, input, name, args, negated);
    }
}
