//! The `refractium` binary: see [`refractium::cli`].

/// mimalloc instead of the system allocator: every connection allocates and
/// frees a handful of small objects (its task, detection buffer, plugin call
/// arguments) on one thread, and glibc's malloc spent about twice as long on
/// them, consolidating free lists after each 4 KiB detection buffer.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    refractium::cli::main()
}
