//! `cargo xtask …`: the same CLI as `buildchain`, run from the checkout, plus `bench`.

mod bench;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        return bench::main(&args[1..]);
    }
    buildchain::cli::main_from_env_with(
        "cargo xtask",
        &[(
            "bench",
            "Benchmarks against the classic tools (`cargo xtask bench --help`)",
        )],
    )
}
