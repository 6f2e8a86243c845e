# The `context` message: what the model conditions on that is fixed for a search
# (features, operators, size limit, data statistics), computed once per (options, dataset).

"""
    operators_by_degree(operators) -> Tuple

The operator tuples of an operator enum, index = arity. DynamicExpressions 2.x stores them as
`operators.ops` (any arity; SR.jl's `Options` and PySR 2.7.2 build it that way); the 1.x layout
(`unaops`, `binops`) is read as `(unaops, binops)`.
"""
function operators_by_degree(operators)
    hasfield(typeof(operators), :ops) && return getfield(operators, :ops)
    return (operators.unaops, operators.binops)
end

"""Operators of arity `degree` (empty when the search has none)."""
function operators_of_degree(operators, degree::Int)
    ops = operators_by_degree(operators)
    return degree <= length(ops) ? ops[degree] : ()
end

# SR.jl 2.x batches large datasets (`batching=:auto`): `mutate!` then receives a fresh
# `SubDataset` view per step. The context (and its statistics) belongs to the full dataset.
const _CORE_MODULE = isdefined(SymbolicRegression, :CoreModule) ? SymbolicRegression.CoreModule : nothing

"""The dataset a (possibly batched) SR.jl dataset is a view of; anything else unchanged."""
full_dataset(dataset) = dataset
if _CORE_MODULE !== nothing && isdefined(_CORE_MODULE, :SubDataset) && isdefined(_CORE_MODULE, :get_full_dataset)
    full_dataset(dataset::_CORE_MODULE.SubDataset) = _CORE_MODULE.get_full_dataset(dataset)
end

"""Printed name of an operator, as SR.jl's `string_tree` prints it (`safe_log` -> `log`)."""
function op_name(op)
    if isdefined(DynamicExpressions, :get_op_name)
        return string(DynamicExpressions.get_op_name(op))
    end
    return string(nameof(op))
end

_std(v) = sqrt(max(sum(abs2, v .- sum(v) / length(v)) / length(v), 0.0))

function _corr(a::AbstractVector{Float64}, b::AbstractVector{Float64})
    sa, sb = _std(a), _std(b)
    (sa == 0 || sb == 0) && return 0.0
    n = length(a)
    ma, mb = sum(a) / n, sum(b) / n
    return clamp(sum((a .- ma) .* (b .- mb)) / n / (sa * sb), -1.0, 1.0)
end

# 0-based ranks with ties broken by position (a stable sort), as numpy's argsort(argsort(a)).
function _ranks(a::AbstractVector{Float64})
    r = Vector{Float64}(undef, length(a))
    r[sortperm(a; alg=Base.Sort.DEFAULT_STABLE)] = 0:(length(a) - 1)
    return r
end

"""
    data_stats(X, y) -> Dict

The `data_stats` object of the protocol (ttsr_bridge's `DataStats`): `X` is SR.jl's
`(nfeatures, nrows)` matrix, `y` the target. Non-finite numbers become `nothing` (JSON null).
"""
function data_stats(X::AbstractMatrix, y::AbstractVector)
    yv = Float64.(y)
    rows = [Float64.(X[j, :]) for j in axes(X, 1)]
    ry = _ranks(yv)
    per_feature(f) = [_json_number(f(x)) for x in rows]
    return Dict{String,Any}(
        "n_samples" => length(yv),
        "y_mean" => _json_number(sum(yv) / length(yv)),
        "y_std" => _json_number(_std(yv)),
        "y_min" => _json_number(minimum(yv)),
        "y_max" => _json_number(maximum(yv)),
        "x_mean" => per_feature(x -> sum(x) / length(x)),
        "x_std" => per_feature(_std),
        "x_min" => per_feature(minimum),
        "x_max" => per_feature(maximum),
        "corr_xy" => per_feature(x -> _corr(x, yv)),
        "monotonic_xy" => per_feature(x -> _corr(_ranks(x), ry)),
    )
end

"""
    context_message(options, dataset, nfeatures) -> Dict

The `context` message for a search with `options` on `dataset`. Operators are sent by their
printed names; the server rejects names it does not know (then every neural move falls back).
"""
function context_message(options, dataset, nfeatures::Int)
    operators = options.operators
    msg = Dict{String,Any}(
        "op" => "context",
        "nfeatures" => nfeatures,
        # The protocol carries unary and binary operators; a parent using an operator of
        # another arity is refused by the server (`bad_tree`) and that move falls back.
        "binary_operators" => [op_name(op) for op in operators_of_degree(operators, 2)],
        "unary_operators" => [op_name(op) for op in operators_of_degree(operators, 1)],
        "maxsize" => options.maxsize,
        "variable_names" => nothing,
        "data_stats" => nothing,
    )
    y = hasproperty(dataset, :y) ? dataset.y : nothing
    if y isa AbstractVector && length(y) > 0 && eltype(y) <: Real && eltype(dataset.X) <: Real
        msg["data_stats"] = data_stats(dataset.X, y)
    end
    return msg
end

# Context messages by (options, full dataset) identity; bounded so that long-lived processes
# running many searches do not accumulate them.
const CONTEXTS = Dict{Tuple{UInt64,UInt64},Tuple{UInt64,Dict{String,Any}}}()
const CONTEXTS_LOCK = ReentrantLock()
const MAX_CACHED_CONTEXTS = 256

"""The context message for this search and its fingerprint (computed once per full dataset:
batches of one dataset share it)."""
function cached_context(options, dataset, nfeatures::Int)
    dataset = full_dataset(dataset)
    key = (objectid(options), objectid(dataset))
    hit = lock(() -> get(CONTEXTS, key, nothing), CONTEXTS_LOCK)
    hit === nothing || return hit
    msg = context_message(options, dataset, nfeatures)
    entry = (hash(JSON3.write(msg)), msg)
    lock(CONTEXTS_LOCK) do
        length(CONTEXTS) >= MAX_CACHED_CONTEXTS && empty!(CONTEXTS)
        CONTEXTS[key] = entry
    end
    return entry
end

"""Server handle of the context on this connection, registering it on first use."""
function context_handle!(conn::Connection, fingerprint::UInt64, msg::Dict{String,Any}, timeout_s::Float64)
    handle = get(conn.contexts, fingerprint, 0)
    handle != 0 && return handle
    try
        handle = Int(request!(conn, copy(msg), timeout_s)[:context])
    catch err
        # The server refused the context (unknown operator, ...): remember it so that this
        # connection does not ask again; every neural move of this search falls back.
        err isa BridgeError && !(err.code in ("closed", "desync")) || rethrow()
        handle = -1
        _bump!(STATS.server_errors)
        @warn "TTSRBridge: the proposal server rejected the search context" exception = err maxlog = 1
    end
    conn.contexts[fingerprint] = handle
    return handle
end
