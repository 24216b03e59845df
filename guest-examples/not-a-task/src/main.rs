//! A component kiln must refuse at deploy: a plain `wasi:cli` command, which exports
//! `wasi:cli/run` but not kiln's `definitions` and `run`.

fn main() {
    println!("hi");
}
