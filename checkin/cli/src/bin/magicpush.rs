//! The `magicpush` binary: check-in server, push and certificate tools. All logic lives in the library.

/// With the `mimalloc` feature, mimalloc replaces the system allocator (see BENCHMARKS.md for
/// the A/B).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    magicpush_cli::main()
}
