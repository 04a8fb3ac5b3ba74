use std::fmt;

/// Why a message can never be applied, in words a person can act on.
///
/// A rejected message goes to the dead-letter queue with this text in a header; it is never
/// retried, because nothing about it will change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(String);

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    pub fn reason(&self) -> &str {
        &self.0
    }

    /// Prefixes the reason with where in the message the problem is (`snapshot.stock[3]`).
    #[must_use]
    pub fn at(self, path: &str) -> Self {
        Self(format!("{path}: {}", self.0))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejection {}
