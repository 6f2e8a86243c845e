# The neural mutation: send the parent to the proposal server, use its child, or fall back to a
# built-in mutation on any failure (counted in `bridge_stats()`).

"""
The built-in mutation types a failed neural move may fall back to: the moves that return a tree
(SR.jl's `MutationResult(; tree)`), so the engine's own constraint check, evaluation and
acceptance apply to the fallback exactly as to the neural child.
"""
const TREE_FALLBACK_TYPES = (
    ConstantMutation,
    OperatorMutation,
    FeatureMutation,
    SwapOperandsMutation,
    AddNodeMutation,
    InsertNodeMutation,
    DeleteNodeMutation,
    RotateTreeMutation,
)

"""
Last-resort fallback table, used only when the search's own `options.mutations` holds no
tree-returning built-in with positive weight: SR.jl 2.7.x's `default_options().mutation_weights`
(src/core/Options.jl), which are also PySR 2.7.2's documented defaults.
"""
const DEFAULT_FALLBACK = Pair{AbstractMutation,Float64}[
    ConstantMutation() => 0.0346,
    OperatorMutation() => 0.293,
    FeatureMutation() => 0.1,
    SwapOperandsMutation() => 0.198,
    AddNodeMutation() => 2.47,
    InsertNodeMutation() => 0.0112,
    DeleteNodeMutation() => 0.870,
    RotateTreeMutation() => 4.26,
]

"""
    NeuralMutation(config::BridgeConfig=BridgeConfig(); fallback=nothing)

An `AbstractMutation` whose child comes from the ttsr_bridge proposal server at `config`.
Add it with `Options(; mutations=[NeuralMutation(cfg) => w])` or through
[`NeuralProposerPlugin`](@ref). Traces record it as mutation type `"neural"`; a fallback is
recorded under the built-in mutation that actually ran.

`fallback=nothing` (default): a failed neural move runs one of the search's own tree-returning
built-in mutations (`options.mutations`, so the configured `ConstantMutation` perturbation and
the user's weights apply), with SR.jl's `condition_mutation_weights!` applied as for any
sampled mutation. A `Vector{Pair{AbstractMutation,Float64}}` replaces that list.
"""
struct NeuralMutation <: AbstractMutation
    config::BridgeConfig
    fallback::Union{Nothing,Vector{Pair{AbstractMutation,Float64}}}
end
NeuralMutation(config::BridgeConfig=BridgeConfig(); fallback=nothing) = NeuralMutation(config, fallback)

# Ticket of the neural child the current task just proposed; read by `on_mutation_end!`, which
# SR.jl calls in the same task right before `next_generation` returns.
const TICKET_KEY = :ttsr_bridge_ticket

_is_tree_fallback(mutation) = any(T -> mutation isa T, TREE_FALLBACK_TYPES)

"""The tree-returning built-ins of `options.mutations` with positive weight (a fresh vector)."""
function tree_fallbacks(options)
    return Pair{AbstractMutation,Float64}[
        p.first => Float64(p.second) for p in options.mutations if _is_tree_fallback(p.first) && p.second > 0
    ]
end

const _CONDITION_WEIGHTS = if isdefined(SymbolicRegression, :condition_mutation_weights!)
    SymbolicRegression.condition_mutation_weights!
else
    nothing
end

"""Weighted fallbacks for one failed move on `member` (conditioned as SR.jl conditions its own)."""
function fallback_weights(m::NeuralMutation, member, options, curmaxsize::Int, nfeatures::Int)
    m.fallback === nothing || return m.fallback
    weights = tree_fallbacks(options)
    isempty(weights) && return DEFAULT_FALLBACK
    conditioned = copy(weights)
    if _CONDITION_WEIGHTS !== nothing
        try
            _CONDITION_WEIGHTS(conditioned, member, options, curmaxsize, nfeatures)
        catch err
            # Another SR.jl version with another hook signature: keep the raw weights.
            err isa MethodError || rethrow()
            return weights
        end
    end
    # Conditioning can zero every tree move (e.g. a lone variable at maxsize); the raw weights
    # still give a move whose child the engine checks.
    return sum(last, conditioned) > 0 ? conditioned : weights
end

function _sample_fallback(weights::AbstractVector{<:Pair})
    total = sum(last, weights)
    threshold = rand() * total
    acc = 0.0
    for (mutation, weight) in weights
        acc += weight
        threshold < acc && return mutation
    end
    return first(weights[end])
end

"""Number of features from `mutate!`'s keywords when `nfeatures` itself is absent."""
function _dataset_nfeatures(kws)
    dataset = get(kws, :dataset, nothing)
    return dataset === nothing ? 1 : size(dataset.X, 1)
end

# Julia prints Float32 constants as `2.5f0` (PySR's default precision is 32); the protocol's
# parent is `string_tree` text with Float64 formatting, which is what the server parses, so
# constants are widened for printing (exact: every Float32 is a Float64).
_constant_text(val::Real) = string(Float64(val))
_constant_text(val) = string(val)

"""The parent as sent in a `propose` message: `string_tree` over `x1..xn`, Float64 constants."""
function parent_text(tree_node, operators)
    return DynamicExpressions.string_tree(tree_node, operators; f_constant=_constant_text)
end

"""The node tree of a plain `Expression` (or a bare node); `nothing` for other expression types."""
_plain_tree(t::AbstractExpressionNode) = t
_plain_tree(t::DynamicExpressions.Expression) = get_tree(t)
_plain_tree(_) = nothing

const _CHECK_CONSTRAINTS = if isdefined(SymbolicRegression, :check_constraints)
    SymbolicRegression.check_constraints
else
    nothing
end

"""maxsize (warm-up `curmaxsize`), maxdepth and operator constraints, via SR.jl's own check."""
function _satisfies_constraints(child, options, curmaxsize::Int)
    f = _CHECK_CONSTRAINTS
    f === nothing && return SymbolicRegression.compute_complexity(child, options) <= curmaxsize
    return f(child, options, curmaxsize)::Bool
end

function _build_child(new_tree, tree_node, text::String, options, nfeatures::Int)
    node = try
        parse_tree(text, typeof(tree_node), options.operators, nfeatures)
    catch err
        err isa InterruptException && rethrow()
        _bump!(STATS.parse_errors)
        return nothing
    end
    return new_tree isa AbstractExpressionNode ? node : DynamicExpressions.with_contents(new_tree, node)
end

function _propose_message(handle::Int, tree_node, member, options, kws, curmaxsize::Int)
    return Dict{String,Any}(
        "op" => "propose",
        "context" => handle,
        "parent" => parent_text(tree_node, options.operators),
        "loss" => _json_number(get(kws, :loss, member.loss)),
        "cost" => _json_number(get(kws, :cost, member.cost)),
        "curmaxsize" => curmaxsize,
        # SR.jl passes neither the population index nor the iteration to `mutate!`.
        "population" => -1,
        "iteration" => -1,
        "temperature" => annealing_temperature(options, get(kws, :plugin_states, nothing)),
    )
end

const _ANNEALING_PLUGIN = if isdefined(SymbolicRegression, :SimulatedAnnealingPlugin)
    SymbolicRegression.SimulatedAnnealingPlugin
else
    nothing
end

"""
The current temperature of SR.jl's `SimulatedAnnealingPlugin` (its worker state, which
`mutate!` receives in `plugin_states`, in the order of `options.plugins`); `nothing` when
annealing is off.
"""
function annealing_temperature(options, plugin_states)
    (_ANNEALING_PLUGIN === nothing || !(plugin_states isa Tuple)) && return nothing
    for (plugin, state) in zip(options.plugins, plugin_states)
        if plugin isa _ANNEALING_PLUGIN && hasproperty(state, :temperature)
            t = getproperty(state, :temperature)
            return t isa Real ? _json_number(t) : nothing
        end
    end
    return nothing
end

"""Ask the server for a child; `(child, ticket)` or `nothing` (then the caller falls back)."""
function neural_child(new_tree, member, m::NeuralMutation, options, kws)
    tree_node = _plain_tree(new_tree)
    tree_node === nothing && (_bump!(STATS.unsupported); return nothing)
    dataset = get(kws, :dataset, nothing)
    dataset === nothing && return nothing
    nfeatures = Int(get(kws, :nfeatures, size(dataset.X, 1)))
    curmaxsize = Int(get(kws, :curmaxsize, options.maxsize))
    conn = acquire(m.config)
    conn === nothing && return nothing
    healthy = false
    try
        fingerprint, ctxmsg = cached_context(options, dataset, nfeatures)
        handle = context_handle!(conn, fingerprint, ctxmsg, m.config.timeout_s)
        healthy = true
        handle < 0 && return nothing
        healthy = false
        _bump!(STATS.requests)
        reply = request!(conn, _propose_message(handle, tree_node, member, options, kws, curmaxsize), m.config.timeout_s)
        healthy = true
        text = get(reply, :child, nothing)
        text === nothing && (_bump!(STATS.declined); return nothing)
        child = _build_child(new_tree, tree_node, String(text), options, nfeatures)
        child === nothing && return nothing
        if !_satisfies_constraints(child, options, curmaxsize)
            _bump!(STATS.constraint_rejects)
            return nothing
        end
        ticket = get(reply, :ticket, nothing)
        return (child, ticket isa Integer ? Int(ticket) : nothing)
    catch err
        err isa InterruptException && rethrow()
        # An error reply leaves the stream in sync; anything else (timeout, closed, garbage)
        # may leave a late reply behind, so that connection is dropped.
        healthy = err isa BridgeError && !(err.code in ("closed", "desync"))
        _bump!(healthy ? STATS.server_errors : STATS.connection_errors)
        return nothing
    finally
        healthy ? release(m.config, conn) : discard(conn)
    end
end

function SymbolicRegression.mutate!(
    new_tree::N, parent_member::P, m::NeuralMutation, options; kws...
) where {N,P}
    task_local_storage(TICKET_KEY, nothing)
    # SR.jl retries a step (`attempt` > 1) only when the previous child failed its constraint
    # check, which a neural child never does (checked below): the retry follows a fallback,
    # so the server is not asked again and a slow server costs at most one timeout per step.
    first_attempt = get(kws, :attempt, 1) == 1
    result = first_attempt ? neural_child(new_tree, parent_member, m, options, kws) : nothing
    if result === nothing
        _bump!(STATS.fallbacks)
        curmaxsize = Int(get(kws, :curmaxsize, options.maxsize))
        nfeatures = Int(get(() -> _dataset_nfeatures(kws), kws, :nfeatures))
        weights = fallback_weights(m, parent_member, options, curmaxsize, nfeatures)
        return SymbolicRegression.mutate!(new_tree, parent_member, _sample_fallback(weights), options; kws...)
    end
    child, ticket = result
    task_local_storage(TICKET_KEY, ticket)
    trace = get(kws, :trace, nothing)
    trace isa AbstractDict && (trace["type"] = "neural")
    _bump!(STATS.proposals)
    return SymbolicRegression.MutationResult{N,P}(; tree=child::N)
end

"""Report what happened to the neural child with `ticket` (fire and forget: no reply)."""
function send_feedback(config::BridgeConfig, ticket::Int, event::MutationEvent)
    conn = acquire(config)
    conn === nothing && return nothing
    ok = false
    try
        conn.next_id += 1
        _write_message(
            conn,
            Dict{String,Any}(
                "op" => "feedback",
                "id" => conn.next_id,
                "ticket" => ticket,
                "accepted" => event.accepted,
                "child_loss" => event.after_loss === nothing ? nothing : _json_number(event.after_loss),
                "child_cost" => event.after_cost === nothing ? nothing : _json_number(event.after_cost),
            ),
        )
        ok = true
        _bump!(STATS.feedback_sent)
    catch err
        err isa InterruptException && rethrow()
        _bump!(STATS.connection_errors)
    finally
        ok ? release(config, conn) : discard(conn)
    end
    return nothing
end
