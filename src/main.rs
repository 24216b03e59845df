//! The `kiln` binary: the host (`kiln serve`) and the CLI in one.

fn main() -> std::process::ExitCode {
    kiln::cli::main()
}
