//! The one JSON convention of every `--json` output: JSON Lines, one document per line,
//! each document an object that starts with `"schema": 1` and `"document": "<kind>"`
//! followed by the document's own fields (docs/json.md lists every kind and field).
//!
//! [`SCHEMA`] changes only when a field is removed, renamed or changes meaning; new
//! fields keep it. Readers ignore fields they do not know, so a document still reads
//! back into its type with the two envelope fields present.

use serde::{Deserialize, Serialize};

/// The schema version every document carries.
pub const SCHEMA: u32 = 1;

/// A document as printed: the envelope fields, then the body's fields.
#[derive(Debug, Serialize)]
pub struct Document<'a, T: ?Sized> {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// What kind of document this is (`check`, `topo`, `copy`, ...).
    pub document: &'a str,
    /// The document's own fields, at the top level.
    #[serde(flatten)]
    pub body: &'a T,
}

/// The envelope alone, to see what a line is before reading it into its type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// The schema version.
    pub schema: u32,
    /// The document's kind.
    pub document: String,
}

/// One line of JSON Lines (without the newline): `body`'s fields after the envelope.
/// Fails when `body` does not serialise to an object (a list or a plain value).
pub fn line<T: Serialize + ?Sized>(document: &str, body: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Document {
        schema: SCHEMA,
        document,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckReport;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Body {
        a: u32,
        b: Option<String>,
    }

    #[test]
    fn envelope_first_one_line_and_round_trip() {
        let body = Body {
            a: 7,
            b: Some("x\ny".into()),
        };
        let l = line("test", &body).unwrap();
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.starts_with(r#"{"schema":1,"document":"test","a":7"#),
            "{l}"
        );
        let env: Envelope = serde_json::from_str(&l).unwrap();
        assert_eq!(env.schema, SCHEMA);
        assert_eq!(env.document, "test");
        let back: Body = serde_json::from_str(&l).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn a_non_object_body_is_an_error_not_a_panic() {
        assert!(line("list", &vec![1, 2]).is_err());
        assert!(line("num", &3).is_err());
    }

    #[test]
    fn a_check_report_reads_back_with_the_envelope() {
        let text = r#"{"provider":"0000:03:00.0","clients":["0000:04:00.0"],
            "client_names":["nvme1n1"],"map_type":"bus_addr","distance":4,"supported":true,
            "messages":[],"fixes":[],"unknowns":[],"kernel":"6.12.0","refused_errno":"EREMOTEIO",
            "is_provider":true,"published":true,"pairs":[]}"#;
        let report: CheckReport = serde_json::from_str(text).unwrap();
        let l = line("check", &report).unwrap();
        let back: CheckReport = serde_json::from_str(&l).unwrap();
        assert_eq!(back, report);
    }
}
