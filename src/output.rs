//! Machine output: every `--json` object the CLI prints carries `schema_version`, so
//! a script can tell which shape it reads. The version rises when a field is removed
//! or changes meaning; new fields keep it.
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

/// The shape version of every `--json` output.
pub const SCHEMA_VERSION: u64 = 1;

/// `value` as JSON with `schema_version` in its top-level object (a value that is
/// not an object is wrapped as `{"schema_version", "value"}`).
pub fn versioned(value: &impl Serialize) -> Result<Value> {
    let mut v = serde_json::to_value(value)?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("schema_version".into(), SCHEMA_VERSION.into());
            Ok(v)
        }
        None => Ok(serde_json::json!({ "schema_version": SCHEMA_VERSION, "value": v })),
    }
}

/// Prints `value` as one pretty JSON object with `schema_version`.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    emit(serde_json::to_string_pretty(&versioned(value)?)?)
}

/// Prints `value` as one JSON line with `schema_version` (streams, benches).
pub fn print_json_line(value: &impl Serialize) -> Result<()> {
    emit(serde_json::to_string(&versioned(value)?)?)
}

/// Prints a benchmark's figures as one JSON line, stamped with what makes runs
/// comparable over time: the bench's name, the load average when it ended (the
/// machine is shared), the cores, and the git commit of the source it was built from.
pub fn print_bench_json(bench: &str, figures: &impl Serialize) -> Result<()> {
    let mut v = versioned(figures)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("bench".into(), bench.into());
        o.insert("load_average".into(), load_average().into());
        o.insert(
            "cores".into(),
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .into(),
        );
        o.insert("git_commit".into(), git_commit().into());
    }
    emit(serde_json::to_string(&v)?)
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`; empty elsewhere).
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect()
}

/// The commit of the checkout this binary was built from (`-dirty` with local
/// changes), or `unknown` when that checkout or git is gone.
pub fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown".to_owned(),
    }
}

/// Writes one line to stdout; a reader that went away (`| head`) ends the output
/// quietly instead of failing the command.
fn emit(text: String) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_gain_the_version_and_other_values_are_wrapped() {
        let v = versioned(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["a"], 1);
        let w = versioned(&vec![1, 2]).unwrap();
        assert_eq!(w["schema_version"], SCHEMA_VERSION);
        assert_eq!(w["value"], serde_json::json!([1, 2]));
    }

    /// Every JSON the CLI prints goes through this module: a new `--json` output
    /// printed directly would lack `schema_version`.
    #[test]
    fn no_command_prints_json_around_this_module() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "output.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // A `println!` of JSON split over several lines.
            let flat: String = text.split_whitespace().collect();
            if flat.contains("println!(\"{}\",serde_json::json!") {
                offenders.push(format!("{}: println! of serde_json::json!", path.display()));
            }
            for (i, line) in text.lines().enumerate() {
                // JSON text is made here only; a file written elsewhere says so.
                let made = line.contains("serde_json::to_string") && !line.contains("// a file");
                if made || line.contains("println!(\"{}\", json(") {
                    offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "print JSON with output::print_json: {offenders:#?}"
        );
    }
}
