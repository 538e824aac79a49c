//! The explorer's inputs: query parameters and path segments, validated with a
//! message naming the parameter, the value and what is expected.

use symphony_core::envelope::TaskClass;
use symphony_core::lifecycle::TaskState;

/// Longest id or submitter the explorer accepts.
const MAX_ID_BYTES: usize = 200;

/// The filters of `/explorer/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this class.
    pub class: Option<TaskClass>,
    /// Only tasks in this lifecycle state.
    pub status: Option<TaskState>,
    /// Only tasks of this submitter (actor id).
    pub submitter: Option<String>,
}

impl TaskFilter {
    /// The query string of the filter (for links and the live refresh).
    pub fn is_empty(&self) -> bool {
        self.class.is_none() && self.status.is_none() && self.submitter.is_none()
    }
}

/// Decodes `%XX` and `+` of one query component.
fn decode(name: &str, raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("{name}: {raw:?} has a malformed percent-escape at byte {i}")
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{name}: {raw:?} is not UTF-8 once decoded"))
}

fn names<T: std::fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses the query of `/explorer/tasks` (`class`, `status`, `submitter`; empty
/// values mean "any"). Unknown or repeated parameters, unknown classes or states and
/// malformed submitters are refused, naming the parameter.
pub fn parse_task_filter(query: Option<&str>) -> Result<TaskFilter, String> {
    let mut f = TaskFilter::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode("parameter name", k)?;
        let value = decode(&key, v)?;
        if seen.contains(&key) {
            return Err(format!("parameter {key:?} is given twice"));
        }
        seen.push(key.clone());
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "class" => {
                f.class = Some(
                    TaskClass::ALL
                        .iter()
                        .copied()
                        .find(|c| c.to_string() == value)
                        .ok_or_else(|| {
                            format!(
                                "class: {value:?} is not a task class (expected one of {})",
                                names(&TaskClass::ALL)
                            )
                        })?,
                );
            }
            "status" => {
                f.status = Some(
                    TaskState::ALL
                        .iter()
                        .copied()
                        .find(|s| s.as_str() == value)
                        .ok_or_else(|| {
                            format!(
                                "status: {value:?} is not a task lifecycle state (expected one of {})",
                                names(TaskState::ALL)
                            )
                        })?,
                );
            }
            "submitter" => {
                check_id("submitter", value)?;
                f.submitter = Some(value.to_owned());
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: the task list is filtered by class, status and submitter"
                ))
            }
        }
    }
    Ok(f)
}

/// An id or actor name as the protocol writes them: 1 to 200 bytes of ASCII
/// letters, digits and `:-_.@`.
pub fn check_id(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(format!(
            "{what}: expected 1 to {MAX_ID_BYTES} bytes, got {}",
            value.len()
        ));
    }
    if let Some((i, c)) = value
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || ":-_.@".contains(*c)))
    {
        return Err(format!(
            "{what}: {value:?} has {c:?} at byte {i} (ids are ASCII letters, digits and :-_.@)"
        ));
    }
    Ok(())
}

/// An epoch number in a path.
pub fn parse_epoch(raw: &str) -> Result<u64, String> {
    raw.parse::<u64>().map_err(|_| {
        format!("epoch: {raw:?} is not an epoch number (a non-negative integer, e.g. /explorer/epochs/0)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_values_are_named() {
        assert_eq!(parse_task_filter(None).unwrap(), TaskFilter::default());
        let f = parse_task_filter(Some(
            "class=query&status=completed&submitter=advertiser%3Aluckin",
        ))
        .unwrap();
        assert_eq!(f.class, Some(TaskClass::Query));
        assert_eq!(f.status, Some(TaskState::Completed));
        assert_eq!(f.submitter.as_deref(), Some("advertiser:luckin"));
        // Empty values mean any (the form sends them).
        assert!(parse_task_filter(Some("class=&status=&submitter="))
            .unwrap()
            .is_empty());
        let e = parse_task_filter(Some("class=bogus")).unwrap_err();
        assert!(e.starts_with("class: \"bogus\" is not a task class"), "{e}");
        assert!(e.contains("parse, query, compute, train"), "{e}");
        let e = parse_task_filter(Some("status=done")).unwrap_err();
        assert!(
            e.contains("status: \"done\"") && e.contains("awaiting_settlement"),
            "{e}"
        );
        let e = parse_task_filter(Some("submitter=%3Cscript%3E")).unwrap_err();
        assert!(e.starts_with("submitter: \"<script>\" has '<'"), "{e}");
        let e = parse_task_filter(Some("color=red")).unwrap_err();
        assert!(e.contains("unknown parameter \"color\""), "{e}");
        let e = parse_task_filter(Some("class=query&class=train")).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = parse_task_filter(Some("class=%zz")).unwrap_err();
        assert!(e.contains("malformed percent-escape"), "{e}");
        let e = parse_task_filter(Some("class=%ff")).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        assert!(parse_epoch("3").is_ok());
        assert!(parse_epoch("-1")
            .unwrap_err()
            .contains("not an epoch number"));
    }
}
