# Parser of the server's replies (SR.jl `string_tree` form, e.g. `(x1 * 2.5) + sin(x2)`) into a
# tree of the search's node type, using only the search's operators. Hand-written (no
# `Meta.parse` / `eval` of received text): numbers, `x<k>` variables, `+ - * / ^` infix with the
# usual precedence, unary minus, and calls `name(a, ...)` of any arity the search has.

"""Operator lookup of one search: (printed or Julia name, arity) => operator index."""
struct OperatorTable
    index::Dict{Tuple{String,Int},Int}
end

function OperatorTable(operators)
    index = Dict{Tuple{String,Int},Int}()
    for (arity, ops) in enumerate(operators_by_degree(operators))
        for (i, op) in enumerate(ops)
            for name in (op_name(op), string(nameof(op)))
                get!(index, (name, arity), i)
            end
        end
    end
    return OperatorTable(index)
end

const TABLES = Dict{UInt64,OperatorTable}()
const TABLES_LOCK = ReentrantLock()

function operator_table(operators)
    key = objectid(operators)
    return lock(TABLES_LOCK) do
        get!(() -> OperatorTable(operators), TABLES, key)
    end
end

struct TreeParseError <: Exception
    message::String
    text::String
    position::Int
end
function Base.showerror(io::IO, e::TreeParseError)
    return print(io, "cannot parse tree at position ", e.position, ": ", e.message, " in ", repr(e.text))
end

# Token kinds: :num, :name, :op (one of + - * / ^), :lparen, :rparen, :comma, :end
struct Token
    kind::Symbol
    text::String
    pos::Int
end

const _OP_CHARS = ('+', '-', '*', '/', '^')

function _number_end(s::String, i::Int)
    n = lastindex(s)
    j = i
    while j <= n && (isdigit(s[j]) || s[j] == '.')
        j += 1
    end
    if j <= n && (s[j] == 'e' || s[j] == 'E' || s[j] == 'f')  # 1.0e-5, Float32 1.0f-5
        k = j + 1
        k <= n && (s[k] == '+' || s[k] == '-') && (k += 1)
        if k <= n && isdigit(s[k])
            j = k
            while j <= n && isdigit(s[j])
                j += 1
            end
        end
    end
    return j
end

function tokenize(s::String)
    tokens = Token[]
    i = 1
    n = lastindex(s)
    while i <= n
        c = s[i]
        if isspace(c)
            i = nextind(s, i)
        elseif isdigit(c) || (c == '.' && i < n && isdigit(s[i + 1]))
            j = _number_end(s, i)
            push!(tokens, Token(:num, s[i:prevind(s, j)], i))
            i = j
        elseif isletter(c) || c == '_'
            j = i
            while j <= n && (isletter(s[j]) || isdigit(s[j]) || s[j] == '_')
                j = nextind(s, j)
            end
            push!(tokens, Token(:name, s[i:prevind(s, j)], i))
            i = j
        elseif c in _OP_CHARS
            push!(tokens, Token(:op, string(c), i))
            i += 1
        elseif c == '(' || c == ')' || c == ','
            push!(tokens, Token(c == '(' ? :lparen : (c == ')' ? :rparen : :comma), string(c), i))
            i += 1
        else
            throw(TreeParseError("unexpected character $(repr(c))", s, i))
        end
    end
    push!(tokens, Token(:end, "", n + 1))
    return tokens
end

"""Recursive-descent state: tokens, position, and how to build nodes of type `N`."""
mutable struct TreeParser{N,T}
    text::String
    tokens::Vector{Token}
    pos::Int
    table::OperatorTable
    nfeatures::Int
    depth::Int
end

const _MAX_NESTING = 512
const _MAX_ARITY = 8
const _PRECEDENCE = Dict("+" => 1, "-" => 1, "*" => 2, "/" => 2)

_peek(p::TreeParser) = p.tokens[p.pos]
function _next!(p::TreeParser)
    t = p.tokens[p.pos]
    p.pos += 1
    return t
end
_fail(p::TreeParser, msg, t::Token=_peek(p)) = throw(TreeParseError(msg, p.text, t.pos))

function _expect!(p::TreeParser, kind::Symbol)
    t = _next!(p)
    t.kind == kind || _fail(p, "expected $(kind), found $(repr(t.text))", t)
    return t
end

function _operator(p::TreeParser, name::String, arity::Int, t::Token)
    idx = get(p.table.index, (name, arity), 0)
    idx == 0 && _fail(p, "operator $(repr(name)) with $arity argument(s) is not in this search", t)
    return idx
end

_leaf_const(p::TreeParser{N,T}, v::Float64) where {N,T} = N(; val=convert(T, v))

function _apply(p::TreeParser{N}, name::String, t::Token, args::Vararg{Any,K}) where {N,K}
    idx = _operator(p, name, K, t)
    K == 1 && return N(; op=idx, l=args[1])
    K == 2 && return N(; op=idx, l=args[1], r=args[2])
    return N(; op=idx, children=args)  # DynamicExpressions 2.x: operators of any arity
end

"""`expression := unary ((+|-|*|/) unary)*` by precedence climbing (left associative)."""
function _expression!(p::TreeParser, min_prec::Int)
    p.depth += 1
    p.depth > _MAX_NESTING && _fail(p, "tree nested too deeply")
    left = _unary!(p)
    while true
        t = _peek(p)
        prec = t.kind == :op ? get(_PRECEDENCE, t.text, 0) : 0
        (prec == 0 || prec < min_prec) && break
        _next!(p)
        right = _expression!(p, prec + 1)
        left = _apply(p, t.text, t, left, right)
    end
    p.depth -= 1
    return left
end

"""`unary := -unary | power`; `-number` is a negative constant, `-x` is `neg(x)`."""
function _unary!(p::TreeParser)
    t = _peek(p)
    if t.kind == :op && t.text == "-"
        _next!(p)
        if _peek(p).kind == :num
            return _power!(p, _leaf_const(p, -_number(p, _next!(p))))
        end
        operand = _unary!(p)
        if !haskey(p.table.index, ("neg", 1)) && haskey(p.table.index, ("*", 2))
            return _apply(p, "*", t, _leaf_const(p, -1.0), operand)  # no `neg` in this search
        end
        return _apply(p, "neg", t, operand)
    end
    return _power!(p, _primary!(p))
end

"""`power := primary (^ unary)?` (right associative, binds tighter than unary minus on the left)."""
function _power!(p::TreeParser, base)
    t = _peek(p)
    if t.kind == :op && t.text == "^"
        _next!(p)
        return _apply(p, "^", t, base, _unary!(p))
    end
    return base
end

function _number(p::TreeParser, t::Token)
    v = tryparse(Float64, replace(t.text, 'f' => 'e'))
    v === nothing && _fail(p, "bad number $(repr(t.text))", t)
    return v
end

function _primary!(p::TreeParser{N}) where {N}
    t = _next!(p)
    if t.kind == :num
        return _leaf_const(p, _number(p, t))
    elseif t.kind == :lparen
        inner = _expression!(p, 1)
        _expect!(p, :rparen)
        return inner
    elseif t.kind == :name
        _peek(p).kind == :lparen && return _call!(p, t)
        t.text in ("Inf", "NaN") && return _leaf_const(p, t.text == "Inf" ? Inf : NaN)
        m = match(r"^x([1-9][0-9]*)$", t.text)
        m === nothing && _fail(p, "unknown name $(repr(t.text))", t)
        k = parse(Int, m.captures[1])
        k <= p.nfeatures || _fail(p, "feature x$k beyond nfeatures=$(p.nfeatures)", t)
        return N(; feature=k)
    end
    return _fail(p, "unexpected $(repr(t.text))", t)
end

function _call!(p::TreeParser, name::Token)
    _expect!(p, :lparen)
    args = Any[_expression!(p, 1)]
    while _peek(p).kind == :comma
        _next!(p)
        push!(args, _expression!(p, 1))
    end
    _expect!(p, :rparen)
    # The operator table decides which arities exist; the cap only bounds the splat below.
    length(args) <= _MAX_ARITY || _fail(p, "$(name.text) called with $(length(args)) arguments", name)
    return _apply(p, name.text, name, args...)
end

"""
    parse_tree(text, ::Type{N}, operators, nfeatures) -> N

Parse `text` (SR.jl `string_tree` form over `x1..x<nfeatures>`) into a tree of node type `N`
(e.g. `Node{Float32,2}`), resolving operator names against `operators` only.
Throws `TreeParseError` on anything else.
"""
function parse_tree(text::AbstractString, ::Type{N}, operators, nfeatures::Int) where {N<:AbstractExpressionNode}
    s = String(text)
    p = TreeParser{N,eltype(N)}(s, tokenize(s), 1, operator_table(operators), nfeatures, 0)
    tree = _expression!(p, 1)
    _peek(p).kind == :end || _fail(p, "trailing input")
    return tree
end
