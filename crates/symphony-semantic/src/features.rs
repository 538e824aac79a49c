//! Training features (placeholder, filled in next).
