//! `magicpush-loadtest`: mock APNs, engine benchmark, simulated fleet. Logic lives in the library.

fn main() -> std::process::ExitCode {
    magicpush_loadtest::cli::main()
}
