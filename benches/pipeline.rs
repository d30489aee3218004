//! `cargo bench`: the same measurements as `dreamframe bench` with its defaults (1920x1080,
//! 30 fps, 10 s pipeline runs), printed as one report.

fn main() -> anyhow::Result<()> {
    let report = dreamframe::bench::run(&dreamframe::cli::BenchArgs::default())?;
    println!("{report}");
    Ok(())
}
