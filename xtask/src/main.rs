//! `cargo xtask`: the project's tasks (being written; see issue 2).

fn main() {
    eprintln!("cargo xtask: no tasks yet");
    std::process::exit(2);
}
