//! The `magicpush` binary: check-in server, push and certificate tools. All logic lives in the library.

fn main() -> std::process::ExitCode {
    magicpush_checkin::cli::main()
}
