//! `cargo xtask …`: the same CLI as `buildchain`, run from the checkout, plus `bench` and
//! `fixture`.

mod bench;
mod fixture;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => return bench::main(&args[1..]),
        Some("fixture") => return fixture::main(&args[1..]),
        _ => {}
    }
    buildchain::cli::main_from_env_with(
        "cargo xtask",
        &[(
            "bench",
            "Benchmarks against the classic tools (`cargo xtask bench --help`)",
        )],
    )
}
