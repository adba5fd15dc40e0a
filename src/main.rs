//! The `cmdop` binary; everything it does lives in the library's `app` module.

fn main() {
    cmdop::app::main()
}
