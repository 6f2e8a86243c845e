# Tests of TTSRBridge. The end-to-end part needs `ttsr` (the Python package's CLI) on PATH, or
# TTSR_SERVE set to a command line that starts it; it is skipped with a message otherwise.
#   julia --project=. --threads=4 julia/TTSRBridge/test/runtests.jl

using Test
using TTSRBridge
using TTSRBridge:
    parse_tree,
    TreeParseError,
    data_stats,
    context_message,
    op_name,
    operators_by_degree,
    parent_text,
    tree_fallbacks,
    full_dataset,
    annealing_temperature,
    has_neural_mutation,
    NeuralMutation
using SymbolicRegression
using DynamicExpressions: Node, OperatorEnum, string_tree

# DynamicExpressions 2.x constructor (the keyword form is deprecated there).
const OPS = OperatorEnum(1 => (sin, exp), 2 => (+, -, *, /))
const NT = typeof(Node{Float64}(; feature=1))

@testset "parse replies into the search's trees" begin
    for text in ("((x1 * 2.5) + sin(x2))", "x1 * 2.5 + sin(x2)", "exp(x1 - -0.5) / x2", "1.0e-5", "(x1 + (x2 + x1))")
        tree = parse_tree(text, NT, OPS, 2)
        again = parse_tree(string_tree(tree, OPS), NT, OPS, 2)
        @test string_tree(again, OPS) == string_tree(tree, OPS)
    end
    @test string_tree(parse_tree("x1 - x2 - x1", NT, OPS, 2), OPS) == "(x1 - x2) - x1"
    @test parse_tree("-1.5", NT, OPS, 1).val == -1.5
    @test_throws TreeParseError parse_tree("cos(x1)", NT, OPS, 1)      # not in this search
    @test_throws TreeParseError parse_tree("x3", NT, OPS, 2)           # beyond nfeatures
    @test_throws TreeParseError parse_tree("(x1 + ", NT, OPS, 1)
    @test_throws TreeParseError parse_tree("x1; rm(\"/\")", NT, OPS, 1)
    @test_throws TreeParseError parse_tree(repeat("(", 2000) * "x1" * repeat(")", 2000), NT, OPS, 1)
end

@testset "operators, Float32 parents, fallbacks, batches, temperature" begin
    @test length(operators_by_degree(OPS)) >= 2
    @test operators_by_degree(OPS)[2] == (+, -, *, /)
    # PySR's default precision is 32: constants must reach the server in Float64 form.
    N32 = typeof(Node{Float32}(; feature=1))
    t32 = parse_tree("(x1 * 2.5) + sin(x2 * 0.1)", N32, OPS, 2)
    text = parent_text(t32, OPS)
    @test !occursin("f0", text)
    @test parse_tree(text, N32, OPS, 2).l.r.val == 2.5f0

    options = Options(; binary_operators=[+, *], perturbation_factor=0.5, probability_negate_constant=0.25)
    fb = tree_fallbacks(options)
    @test !isempty(fb) && all(p -> p.second > 0, fb)
    cm = only(first(p) for p in fb if first(p) isa SymbolicRegression.ConstantMutation)
    @test cm.perturbation_factor == 0.5 && cm.probability_negate == 0.25
    @test !any(p -> p.first isa SymbolicRegression.SimplifyMutation, fb)  # not tree-returning

    with_neural = Options(; binary_operators=[+, *], mutations=[NeuralMutation() => 2.0])
    @test has_neural_mutation(with_neural) && !has_neural_mutation(options)

    X = randn(2, 16)
    ds = SymbolicRegression.Dataset(X, X[1, :])
    @test full_dataset(ds) === ds
    core = SymbolicRegression.CoreModule
    if isdefined(core, :batch)
        @test full_dataset(core.batch(ds, [1, 3, 5])) === ds
    end

    states = map(p -> p isa SymbolicRegression.SimulatedAnnealingPlugin ? (; temperature=0.5) : nothing, options.plugins)
    expected = any(p -> p isa SymbolicRegression.SimulatedAnnealingPlugin, options.plugins) ? 0.5 : nothing
    @test annealing_temperature(options, states) == expected
    @test annealing_temperature(options, nothing) === nothing
end

@testset "context message" begin
    X = [1.0 2.0 3.0 4.0; 4.0 3.0 2.0 1.0]
    y = [2.0, 4.0, 6.0, 8.0]
    st = data_stats(X, y)
    @test st["n_samples"] == 4
    @test st["corr_xy"] ≈ [1.0, -1.0]
    @test st["monotonic_xy"] ≈ [1.0, -1.0]
    @test op_name(+) == "+"
    options = Options(; binary_operators=[+, *], unary_operators=[sin], maxsize=12)
    msg = context_message(options, (; X=X, y=y), 2)
    @test msg["binary_operators"] == ["+", "*"] && msg["unary_operators"] == ["sin"]
    @test msg["maxsize"] == 12
end

function start_server()
    cmd = get(ENV, "TTSR_SERVE", "")
    exe = isempty(cmd) ? Sys.which("ttsr") : nothing
    isempty(cmd) && exe === nothing && return nothing
    portfile = tempname()
    base = isempty(cmd) ? `$exe serve` : Cmd(String.(split(cmd)))
    proc = run(pipeline(`$base --model classic --port 0 --port-file $portfile`; stderr=stderr); wait=false)
    for _ in 1:600
        isfile(portfile) && !isempty(strip(read(portfile, String))) && break
        sleep(0.1)
    end
    isfile(portfile) || (kill(proc); error("ttsr serve did not start"))
    return proc, parse(Int, strip(read(portfile, String)))
end

@testset "equation_search with the neural plugin (threads=$(Threads.nthreads()))" begin
    server = start_server()
    if server === nothing
        @info "skipping the end-to-end test: no `ttsr` on PATH and TTSR_SERVE unset"
    else
        proc, port = server
        try
            config = BridgeConfig(; port=port, timeout_s=5.0)
            @test check_server(config) === nothing
            reset_bridge_stats!()
            X = randn(2, 64)
            y = 2 .* X[1, :] .+ sin.(X[2, :])
            options = Options(;
                binary_operators=[+, -, *],
                unary_operators=[sin],
                populations=4,
                population_size=20,
                maxsize=15,
                plugins=(NeuralProposerPlugin(; config=config, weight=5.0, require_server=true),),
            )
            hof = equation_search(X, y; options=options, niterations=2, parallelism=:multithreading)
            stats = bridge_stats()
            @test stats.requests > 0
            @test stats.proposals > 0
            @test stats.connection_errors == 0
            @test stats.feedback_sent > 0
            @test !isempty(calculate_pareto_frontier(hof))
            # An unreachable server: every neural move falls back, the search still runs.
            reset_bridge_stats!()
            dead = NeuralProposerPlugin(; config=BridgeConfig(; port=1, timeout_s=0.5), weight=5.0)
            options2 = Options(;
                binary_operators=[+, *], populations=2, population_size=12, tournament_selection_n=6, plugins=(dead,)
            )
            equation_search(X, y; options=options2, niterations=1, parallelism=:multithreading)
            @test bridge_stats().fallbacks > 0
        finally
            kill(proc)  # SIGTERM: graceful shutdown
            wait(proc)
        end
    end
end
