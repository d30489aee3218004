//! `cargo bench`: the same measurements as `dreamframe bench` with its defaults (1920x1080,
//! 30 fps, 10 s pipeline runs), printed as one report.

#![deny(unsafe_code)]

fn main() -> anyhow::Result<()> {
    let report = dreamframe::testing::bench(&dreamframe::testing::BenchArgs::default())?;
    println!("{report}");
    Ok(())
}
