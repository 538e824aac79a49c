#![no_main]
//! libFuzzer target: an `arbitrary`-built spec over the spec vocabulary, fed to the
//! campaign, training and task spec parsers (`symphony_fuzz::structured_spec`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(outcomes) = symphony_fuzz::structured_spec(data) {
        for outcome in &outcomes {
            assert!(outcome.is_clear(), "refusal without a message: {outcome:?}");
        }
    }
});
