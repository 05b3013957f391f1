//! Job identifiers.
//!
//! A job id is what callers hold on to, so it must be unique without coordination between
//! coordinators and printable in logs, URLs and gRPC messages. A random UUIDv4 gives both; the
//! canonical form is lowercase and hyphenated, the same form ComfyUI requires of prompt ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JobError;

/// Identifies one job for its whole life, across retries and coordinator restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// Creates a fresh random job id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID, e.g. one read back from the journal.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Returns the underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Uuid's Display is the canonical lowercase hyphenated form.
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for JobId {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form is accepted, so one job has one spelling up to case; its
        // hex digits may be either case, as RFC 9562 asks of UUIDs read as input.
        let uuid = Uuid::try_parse(s).map_err(|_| JobError::BadJobId(s.to_owned()))?;
        if !uuid.hyphenated().to_string().eq_ignore_ascii_case(s) {
            return Err(JobError::BadJobId(s.to_owned()));
        }
        Ok(Self(uuid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_prints_and_parses_back() {
        let id = JobId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36, "canonical uuid text is 36 characters");
        assert_eq!(text, text.to_lowercase(), "job ids print in lowercase");
        assert_eq!(text.parse::<JobId>().expect("own output parses"), id);
    }

    #[test]
    fn job_id_refuses_other_forms_and_ignores_case() {
        let id = JobId::new();
        let upper = id.to_string().to_uppercase();
        assert_eq!(
            upper.parse::<JobId>().expect("hex digits in upper case"),
            id,
            "the same job in either case"
        );
        let simple = id.as_uuid().simple().to_string();
        assert!(
            simple.parse::<JobId>().is_err(),
            "unhyphenated form must be refused"
        );
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }

    #[test]
    fn fresh_job_ids_differ() {
        assert_ne!(JobId::new(), JobId::new());
    }
}
