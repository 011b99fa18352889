//! `fullautoctl`: the Patroni-compatible command line of fullauto (see `agent_bin::ctl`).

fn main() {
    std::process::exit(agent_bin::ctl::main());
}
