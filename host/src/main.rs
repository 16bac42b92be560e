//! The `refractium` binary: see [`refractium::cli`].

/// mimalloc instead of the system allocator: every connection allocates and
/// frees a handful of small objects (its task, detection buffer, plugin call
/// arguments) on one thread, and glibc's malloc spent about twice as long on
/// them, consolidating free lists after each 4 KiB detection buffer.
///
/// Built without transparent huge pages (`no_thp`): mimalloc otherwise asks
/// for them on its arena, and the kernel then backs every touched 2 MiB of
/// it with a whole huge page. The process sat at 25.8 MiB resident at start
/// (10 MiB of it five huge pages, for about 1 MiB in use) and 35.4 MiB with
/// 2,000 clients holding; without them 18.2 and 24.5 MiB (HAProxy 29.5),
/// with the same connection rates (24.5k against 23.6k/s at concurrency 64,
/// 6.1k against 6.1k at 1, in alternating rounds).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    refractium::cli::main()
}
