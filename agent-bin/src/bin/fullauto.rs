fn main() {
    eprintln!("fullauto: not wired yet (issue 8)");
    std::process::exit(2);
}
