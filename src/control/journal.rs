//! Placeholder: the journal is being written.
