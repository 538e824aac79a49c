#![no_main]
//! libFuzzer target: one gateway request built from the input (method, path, headers,
//! body) through header parsing, signature verification, the replay cache, the JSON
//! body → task spec parser and the attempt signatures
//! (`symphony_fuzz::gateway_request`). Never a panic; never a forged request or
//! attempt accepted (the harness asserts it); refusals carry a message.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outcome = symphony_fuzz::gateway_request(data);
    assert!(outcome.is_clear(), "refusal without a message: {outcome:?}");
});
