//! Configuration problems: each names the key it concerns and why it is
//! wrong; `ConfigErrors` collects every one found.

use std::fmt;

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Dotted key path, e.g. `aggregator.flush_max_delay`, or `env VATIO_X__Y` for a bad override.
    pub key: String,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found; `Display` prints one `key.path: reason` per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, sorted by key.
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// Sort the problems by key, drop exact duplicates and wrap them; `Ok` if there are none.
    pub(crate) fn from_problems(mut problems: Vec<Problem>) -> Result<(), ConfigErrors> {
        if problems.is_empty() {
            return Ok(());
        }
        problems.sort();
        problems.dedup();
        Err(ConfigErrors { problems })
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
