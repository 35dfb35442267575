//! `mob-agent`: see the library's docs.

fn main() -> std::process::ExitCode {
    mob_agent::main()
}
