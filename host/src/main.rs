//! The `refractium` binary: see [`refractium::cli`].

fn main() -> std::process::ExitCode {
    refractium::cli::main()
}
