fn main() -> std::process::ExitCode {
    buildchain::cli::main_from_env("buildchain")
}
