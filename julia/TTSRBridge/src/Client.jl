# Loopback client: a per-process pool of connections, one request/reply at a time per connection.

"""
    BridgeConfig(; host="127.0.0.1", port, timeout_s=2.0, retry_after_s=1.0, max_idle=64)

Where the proposal server listens and how long to wait. Plain data: it travels to worker
processes inside `options` (the connections themselves are per process, see `POOLS`).

- `timeout_s`: longest wait for one reply; a slower reply counts as a failure (fallback).
- `retry_after_s`: after a connection failure, no new connection is tried for this long, so an
  absent server costs one failed connect per second, not one per mutation.
- `max_idle`: idle connections kept per process (one per concurrently mutating task is enough).
"""
Base.@kwdef struct BridgeConfig
    host::String = "127.0.0.1"
    port::Int = 0
    timeout_s::Float64 = 2.0
    retry_after_s::Float64 = 1.0
    max_idle::Int = 64
end

"""One TCP connection that has completed the `hello` handshake."""
mutable struct Connection
    sock::TCPSocket
    next_id::Int
    contexts::Dict{UInt64,Int}  # context fingerprint => server handle (-1: rejected by the server)
end

"""Idle connections of one server address, shared by all tasks of this process."""
mutable struct ConnectionPool
    idle::Vector{Connection}
    lock::ReentrantLock
    down_until::Float64
end

ConnectionPool() = ConnectionPool(Connection[], ReentrantLock(), 0.0)

const POOLS = Dict{Tuple{String,Int},ConnectionPool}()
const POOLS_LOCK = ReentrantLock()

function _pool(config::BridgeConfig)
    return lock(POOLS_LOCK) do
        get!(ConnectionPool, POOLS, (config.host, config.port))
    end
end

"""A failure talking to the server (connection, timeout, protocol or error reply)."""
struct BridgeError <: Exception
    code::String
    message::String
end
Base.showerror(io::IO, e::BridgeError) = print(io, "TTSRBridge [", e.code, "]: ", e.message)

# JSON has no NaN/Inf: non-finite numbers travel as null (the server substitutes its default).
_json_number(x::Real) = isfinite(x) ? Float64(x) : nothing

function _write_message(conn::Connection, msg)
    write(conn.sock, JSON3.write(msg), '\n')
    return nothing
end

"""Read one line, closing the socket if it takes longer than `timeout_s` (readline then fails)."""
function _readline_timeout(sock::TCPSocket, timeout_s::Float64)
    timer = Timer(timeout_s) do _
        close(sock)
    end
    try
        return readline(sock)
    finally
        close(timer)
    end
end

"""Send `msg` (a `Dict`) with a fresh id and return the reply object with that id."""
function request!(conn::Connection, msg::Dict{String,Any}, timeout_s::Float64)
    conn.next_id += 1
    rid = conn.next_id
    msg["id"] = rid
    _write_message(conn, msg)
    line = _readline_timeout(conn.sock, timeout_s)
    isempty(line) && throw(BridgeError("closed", "no reply within $(timeout_s) s or connection closed"))
    reply = JSON3.read(line)
    get(reply, :id, nothing) == rid ||
        throw(BridgeError("desync", "expected the reply to id $rid, got $(get(reply, :id, nothing))"))
    if get(reply, :ok, false) !== true
        throw(BridgeError(string(get(reply, :code, "error")), string(get(reply, :error, ""))))
    end
    return reply
end

function _open_connection(config::BridgeConfig)
    sock = Sockets.connect(config.host, config.port)
    conn = Connection(sock, 0, Dict{UInt64,Int}())
    try
        hello = Dict{String,Any}(
            "op" => "hello", "protocol" => PROTOCOL_VERSION, "client" => "TTSRBridge.jl"
        )
        reply = request!(conn, hello, config.timeout_s)
        reply[:protocol] == PROTOCOL_VERSION ||
            throw(BridgeError("protocol_mismatch", "server protocol $(reply[:protocol])"))
    catch
        close(sock)
        rethrow()
    end
    return conn
end

"""Take an idle connection or open a new one; `nothing` while the server is marked down."""
function acquire(config::BridgeConfig)
    pool = _pool(config)
    conn = lock(pool.lock) do
        isempty(pool.idle) ? nothing : pop!(pool.idle)
    end
    conn === nothing || return conn
    time() < pool.down_until && return nothing
    try
        return _open_connection(config)
    catch err
        _bump!(STATS.connection_errors)
        lock(pool.lock) do
            pool.down_until = time() + config.retry_after_s
        end
        err isa InterruptException && rethrow()
        return nothing
    end
end

"""Give a healthy connection back to the pool (closed when the pool is full)."""
function release(config::BridgeConfig, conn::Connection)
    pool = _pool(config)
    keep = lock(pool.lock) do
        length(pool.idle) < config.max_idle ? (push!(pool.idle, conn); true) : false
    end
    keep || close(conn.sock)
    return nothing
end

"""Drop a connection after any failure: its stream may hold a late reply (desync)."""
discard(conn::Connection) = (close(conn.sock); nothing)

"""Close every pooled connection of `config`'s server (end of a search)."""
function close_pool(config::BridgeConfig)
    pool = _pool(config)
    lock(pool.lock) do
        foreach(c -> close(c.sock), pool.idle)
        empty!(pool.idle)
        pool.down_until = 0.0
    end
    return nothing
end

"""
    check_server(config::BridgeConfig) -> Union{Nothing,String}

`nothing` when the server answers `hello`, else a description of the failure.
"""
function check_server(config::BridgeConfig)
    try
        conn = _open_connection(config)
        release(config, conn)
        return nothing
    catch err
        return sprint(showerror, err)
    end
end
