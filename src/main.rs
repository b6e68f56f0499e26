fn main() -> std::process::ExitCode {
    extauth_bridge::app::main()
}
