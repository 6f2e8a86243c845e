"""
    TTSRBridge

A thin bridge from SymbolicRegression.jl (SR.jl) to the ttsr_bridge proposal server: a custom
mutation, [`NeuralMutation`](@ref), asks the server (a separate Python process, `ttsr serve`) for a
child of the tournament winner; [`NeuralProposerPlugin`](@ref) contributes that mutation to a search
and reports each outcome back. The wire format is documented in `PROTOCOL.md` beside this package.

Why a server and not a PythonCall callback: SR.jl runs populations in `Threads.@spawn` tasks or
worker processes. Worker processes have no Python; worker threads would all queue on Python's GIL
(PySR 2.7.2 releases it during the search with `equation_search._jl_call_nogil`, so a callback
would serialise the populations rather than deadlock, but any code path that keeps the GIL in
the calling thread would deadlock). A loopback socket works from any thread or process, and the
server batches requests from all populations into one model call.
"""
module TTSRBridge

using Sockets: Sockets, TCPSocket
using Random: Random
using JSON3: JSON3
using DynamicExpressions: DynamicExpressions, AbstractExpression, AbstractExpressionNode, get_tree
using SymbolicRegression: SymbolicRegression, AbstractMutation, AbstractPlugin, MutationEvent
using SymbolicRegression:
    ConstantMutation,
    OperatorMutation,
    FeatureMutation,
    SwapOperandsMutation,
    AddNodeMutation,
    InsertNodeMutation,
    DeleteNodeMutation,
    RotateTreeMutation

export BridgeConfig, NeuralMutation, NeuralProposerPlugin, bridge_stats, reset_bridge_stats!, check_server

const PROTOCOL_VERSION = 1

include("Stats.jl")
include("Client.jl")
include("Context.jl")
include("ParseTree.jl")
include("NeuralMutation.jl")
include("Plugin.jl")

end # module TTSRBridge
