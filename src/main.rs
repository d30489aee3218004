//! The dreamframe binary. Everything it does is the library's `commands::main` (the arguments,
//! the dispatch, the exit statuses), so the library's API stays what tests and tools need.

fn main() -> std::process::ExitCode {
    dreamframe::main()
}
