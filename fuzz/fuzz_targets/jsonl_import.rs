#![no_main]
//! libFuzzer target: `symphony_fuzz::jsonl_import` must return a clear outcome, never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outcome = symphony_fuzz::jsonl_import(data);
    assert!(outcome.is_clear(), "refusal without a message: {outcome:?}");
});
