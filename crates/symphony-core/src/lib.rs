//! SCP protocol core.
#![forbid(unsafe_code)]
