fn main() {
    eprintln!("fullautoctl: not wired yet (issue 8)");
    std::process::exit(2);
}
