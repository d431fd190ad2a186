//! docs/protocol.md documents every code natter-protocol defines: a new error reason, HTTP
//! error or close code without its table row fails here.

use natter_protocol::{CloseCode, ErrorReason, HttpError};

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

/// The table rows of the doc, as their cells.
fn rows(doc: &str) -> Vec<Vec<String>> {
    doc.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn has_row(rows: &[Vec<String>], cells: &[String]) -> bool {
    rows.iter().any(|r| r.starts_with(cells))
}

#[test]
fn every_http_error_has_a_row_with_its_status() {
    let rows = rows(&protocol_md());
    let missing: Vec<_> = HttpError::ALL
        .iter()
        .filter(|e| {
            !has_row(
                &rows,
                &[e.status().to_string(), format!("`{}`", e.as_str())],
            )
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/protocol.md: {missing:?}");
}

#[test]
fn every_error_reason_has_a_row() {
    let rows = rows(&protocol_md());
    let missing: Vec<_> = ErrorReason::ALL
        .iter()
        .filter(|r| !has_row(&rows, &[format!("`{}`", r.as_str())]))
        .collect();
    assert!(missing.is_empty(), "not in docs/protocol.md: {missing:?}");
}

#[test]
fn every_close_code_has_a_row_with_its_reason() {
    let rows = rows(&protocol_md());
    let missing: Vec<_> = CloseCode::ALL
        .iter()
        .filter(|c| !has_row(&rows, &[c.code().to_string(), format!("`{}`", c.reason())]))
        .collect();
    assert!(missing.is_empty(), "not in docs/protocol.md: {missing:?}");
}

#[test]
fn http_errors_are_distinct() {
    let mut names: Vec<_> = HttpError::ALL.iter().map(|e| e.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), HttpError::ALL.len());
}
