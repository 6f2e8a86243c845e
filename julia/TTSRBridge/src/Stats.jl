# Per-process counters of the bridge (each worker process of a multiprocessing search has its own).

"""Atomic counters of what the neural mutation did in this Julia process."""
struct BridgeStats
    requests::Threads.Atomic{Int}          # propose requests sent
    proposals::Threads.Atomic{Int}         # children used as the mutation's result
    declined::Threads.Atomic{Int}          # the server answered "no child"
    fallbacks::Threads.Atomic{Int}         # built-in mutation used instead (every failure)
    server_errors::Threads.Atomic{Int}     # error replies
    connection_errors::Threads.Atomic{Int} # connect / write / read / timeout failures
    parse_errors::Threads.Atomic{Int}      # replies that do not parse with the search's operators
    constraint_rejects::Threads.Atomic{Int} # children over maxsize / maxdepth / constraints
    unsupported::Threads.Atomic{Int}       # trees the bridge cannot send (non-`Expression` types)
    feedback_sent::Threads.Atomic{Int}
end

BridgeStats() = BridgeStats((Threads.Atomic{Int}(0) for _ in 1:fieldcount(BridgeStats))...)

const STATS = BridgeStats()

_bump!(counter::Threads.Atomic{Int}) = (Threads.atomic_add!(counter, 1); nothing)

"""
    bridge_stats() -> NamedTuple

Counters of this process: requests, proposals, declined, fallbacks, server/connection/parse
errors, constraint rejects, unsupported trees, feedback messages sent.
"""
function bridge_stats()
    names = fieldnames(BridgeStats)
    return NamedTuple{names}(Tuple(getfield(STATS, n)[] for n in names))
end

"""Reset every counter of [`bridge_stats`](@ref) to zero."""
function reset_bridge_stats!()
    for n in fieldnames(BridgeStats)
        getfield(STATS, n)[] = 0
    end
    return nothing
end
