# The plugin: contributes the neural mutation to a search and reports outcomes to the server.

"""
    NeuralProposerPlugin(; config=BridgeConfig(), weight=1.0, feedback=true, require_server=false)

An `AbstractPlugin` that adds `NeuralMutation(config) => weight` to the search's mutations
(`plugin_mutations`), checks the server at search start (`require_server=true` makes an
unreachable server an error, otherwise every neural move falls back), sends each neural move's
outcome (accepted, cost and loss after) back to the server (`on_mutation_end!`), and closes its
pooled connections at search end.

Use with SR.jl: `Options(; plugins=(NeuralProposerPlugin(; config=BridgeConfig(; port=P)),))`;
from PySR: `ttsr_bridge.PySRRegressor(neural_proposer=...)` or `plugins=[...]`.

SR.jl treats plugin mutations as defaults: an explicit `Options(; mutations=[NeuralMutation(c) => w])`
entry replaces this one, and `default_mutations=...` drops every plugin mutation (then add
`NeuralMutation` to `mutations` yourself; `on_search_start!` warns when it is missing).
"""
Base.@kwdef struct NeuralProposerPlugin <: AbstractPlugin
    config::BridgeConfig = BridgeConfig()
    weight::Float64 = 1.0
    feedback::Bool = true
    require_server::Bool = false
end

function SymbolicRegression.plugin_mutations(p::NeuralProposerPlugin)
    p.weight > 0 || return Pair{AbstractMutation,Float64}[]
    return Pair{AbstractMutation,Float64}[NeuralMutation(p.config) => p.weight]
end

SymbolicRegression.init_plugin_state(::NeuralProposerPlugin, options, dataset) = nothing

"""Whether `options.mutations` (SR.jl's resolved list) samples a `NeuralMutation` at all."""
has_neural_mutation(options) = any(p -> p.first isa NeuralMutation && p.second > 0, options.mutations)

function SymbolicRegression.on_search_start!(_, p::NeuralProposerPlugin, dataset, options, ropt)
    if p.weight > 0 && !has_neural_mutation(options)
        @warn(
            "TTSRBridge: no NeuralMutation with positive weight in options.mutations " *
            "(`default_mutations` drops plugin mutations); the neural move never runs",
            maxlog = 1,
        )
    end
    problem = check_server(p.config)
    problem === nothing && return nothing
    p.require_server && error("TTSRBridge: proposal server at $(p.config.host):$(p.config.port): $problem")
    @warn "TTSRBridge: proposal server unreachable; neural moves will fall back to built-in mutations" problem maxlog = 1
    return nothing
end

function SymbolicRegression.on_search_end!(_, p::NeuralProposerPlugin, search_state, dataset, options, ropt)
    close_pool(p.config)
    return nothing
end

# SR.jl fires this once per `next_generation` call, in the task that ran `mutate!`, after the
# accept/reject decision (also for constraint and NaN rejections); the ticket of the neural
# child travels in task-local storage from `mutate!` to here.
function SymbolicRegression.on_mutation_end!(
    _, p::NeuralProposerPlugin, ::NeuralMutation, event::MutationEvent, dataset, options
)
    ticket = get(task_local_storage(), TICKET_KEY, nothing)
    ticket === nothing && return nothing
    task_local_storage(TICKET_KEY, nothing)
    p.feedback && send_feedback(p.config, ticket::Int, event)
    return nothing
end
