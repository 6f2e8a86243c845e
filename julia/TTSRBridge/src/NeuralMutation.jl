# The neural mutation: send the parent to the proposal server, use its child, or fall back to a
# built-in mutation on any failure (counted in `bridge_stats()`).

"""
Built-in mutations used when a neural move fails (server down, timeout, declined, unparsable or
over-size child). Tree-returning moves only, weighted as PySR 2.7.2's documented defaults.
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
    NeuralMutation(config::BridgeConfig=BridgeConfig(); fallback=DEFAULT_FALLBACK)

An `AbstractMutation` whose child comes from the ttsr_bridge proposal server at `config`.
Add it with `Options(; mutations=[NeuralMutation(cfg) => w])` or through
[`NeuralProposerPlugin`](@ref). Traces record it as mutation type `"neural"`; a fallback is
recorded under the built-in mutation that actually ran.
"""
struct NeuralMutation <: AbstractMutation
    config::BridgeConfig
    fallback::Vector{Pair{AbstractMutation,Float64}}
end
NeuralMutation(config::BridgeConfig=BridgeConfig(); fallback=DEFAULT_FALLBACK) = NeuralMutation(config, fallback)

# Ticket of the neural child the current task just proposed; read by `on_mutation_end!`, which
# SR.jl calls in the same task right after the accept/reject decision.
const TICKET_KEY = :ttsr_bridge_ticket

function _sample_fallback(m::NeuralMutation)
    total = sum(last, m.fallback)
    threshold = rand() * total
    acc = 0.0
    for (mutation, weight) in m.fallback
        acc += weight
        threshold < acc && return mutation
    end
    return first(m.fallback[end])
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
        "parent" => DynamicExpressions.string_tree(tree_node, options.operators),
        "loss" => _json_number(get(kws, :loss, member.loss)),
        "cost" => _json_number(get(kws, :cost, member.cost)),
        "curmaxsize" => curmaxsize,
        # SR.jl does not pass the population index, iteration or temperature to `mutate!`.
        "population" => -1,
        "iteration" => -1,
        "temperature" => nothing,
    )
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
    result = neural_child(new_tree, parent_member, m, options, kws)
    if result === nothing
        _bump!(STATS.fallbacks)
        return SymbolicRegression.mutate!(new_tree, parent_member, _sample_fallback(m), options; kws...)
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
