//! The shared suite against `MemoryLedger`.

mod suite;

use symphony_ledger::{Genesis, MemoryLedger};

struct Memory;

impl suite::Factory for Memory {
    type L = MemoryLedger;
    fn make(&self, genesis: &Genesis) -> MemoryLedger {
        MemoryLedger::new(genesis).unwrap()
    }
}

#[test]
fn memory_ledger_passes_the_shared_suite() {
    suite::run_all(&Memory);
}
