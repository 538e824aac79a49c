//! `--help` examples for every command, in one table so that each command's help
//! ends with lines a newcomer can paste. A command that sets its own `after_help`
//! in its definition keeps it; a test walks the whole tree and fails on any command
//! without examples.
use clap::Command;

/// `(command path, example lines)`; each line is `symphony …` plus a short note.
const EXAMPLES: &[(&str, &str)] = &[
    ("demo", "symphony demo luckin\nsymphony demo train --json\nsymphony demo compute"),
    ("demo luckin", "symphony demo luckin                         the default campaign (20,000 people, 4 Vaults)\nsymphony demo luckin --subjects 5000 --json   one JSON object for machines\nsymphony demo luckin --dir net                keep the ledger; then `symphony ledger show --dir net`"),
    ("demo train", "symphony demo train                          examples/train.toml on the embedded network\nsymphony demo train --registry models --json  the model, its card and curve in models/"),
    ("demo parse", "symphony demo parse                  receipts rendered, OCR'd in the Vault enclave, rewarded\nsymphony demo parse --dir pv --json  keep the network for `symphony producer … --dir pv`"),
    ("producer", "symphony demo parse --dir pv\nsymphony producer earnings --dir pv\nsymphony producer consent --dir pv --revoke marketing"),
    ("producer upload", "symphony producer upload receipt.png\nsymphony producer upload receipt.pdf --json"),
    ("producer consent", "symphony producer consent --dir pv\nsymphony producer consent --dir pv --revoke marketing   the next campaign leaves you out\nsymphony producer consent --dir symphony-devnet --revoke marketing   on a devnet up with --producer-vault"),
    ("producer sign-in", "symphony producer sign-in --challenge 3f9a…c2 --dir symphony-devnet   paste the signature into /explorer/portal/sign-in\nsymphony producer sign-in --challenge 3f9a…c2 --dir net --host 127.0.0.1:7443 --json"),
    ("producer budget", "symphony producer budget --dir pv --json\nsymphony producer budget --dir symphony-devnet   on a devnet up with --producer-vault"),
    ("producer earnings", "symphony producer earnings --dir pv   quality rewards and dividends by epoch\nsymphony producer earnings --dir devnet --json   through the gateway, signed as producer:alice"),
    ("producer stake", "symphony producer stake --dir pv\nsymphony producer stake --dir devnet --bond   on a devnet: bond S_producer, registered with the masters: rewards 100 %"),
    ("producer claim", "symphony producer claim --dir net --producer s-0123456789abcdef   every unclaimed dividend leaf of that data subject, proven and paid\nsymphony producer claim --dir net --producer actor:producer:s-0123456789abcdef --json"),
    ("bench parse", "symphony bench parse --receipts 25 --json   field accuracy per level and receipts/s"),
    ("bench luckin", "symphony bench luckin                       100,000 people, 1M records, 8 Vaults, vs a plaintext scan\nsymphony bench luckin --subjects 1000000 --records 10000000 --vaults 8 --json"),
    ("bench train", "symphony bench train                        100,000 people, 4 Vaults, 12 rounds, time per phase\nsymphony bench train --subjects 20000 --rounds 3 --json"),
    ("demo compute", "symphony demo compute\nsymphony demo compute --spec examples/compute.toml --json"),
    ("data", "symphony data generate --subjects 1000 --vaults 2 --records 10000 --out data"),
    ("vault", "symphony vault import --vault v1.redb --id vault-01 data/vault-01.jsonl data/consent.jsonl\nsymphony vault budget --vault v1.redb --subject s-0123456789abcdef"),
    ("vault budget", "symphony vault budget --vault v1.redb --subject s-0123456789abcdef\nsymphony vault budget --vault v1.redb --subject s-0123456789abcdef --json"),
    ("policy", "symphony policy show"),
    ("policy show", "symphony policy show > policy-v2.json   edit, then `symphony gov propose policy --file policy-v2.json`"),
    ("ledger", "symphony ledger reconcile --dir symphony-devnet\nsymphony ledger show --dir symphony-devnet --account luckin"),
    ("ledger reconcile", "symphony ledger reconcile --dir symphony-devnet --json   the masters' replicated ledger\nsymphony ledger reconcile --dir net                       a demo's `--dir`"),
    ("sim", "symphony sim --seeds 20                  20 seeds x 200 requests, exit 1 on a violated invariant\nsymphony sim --seed 7 --tasks 50         replay one seed and print every step"),
    ("master", "symphony master --config symphony-devnet/master-0.toml   (`devnet up` starts these for you)"),
    ("enterprise", "symphony enterprise --config symphony-devnet/enterprise-0.toml   (`devnet up` starts these for you)"),
    ("keys", "symphony keys new --out advertiser.key"),
    ("keys new", "symphony keys new --out advertiser.key   an ed25519 signing key for the gateway"),
    ("devnet", "symphony devnet up\nsymphony devnet status\nsymphony devnet down"),
    ("devnet up", "symphony devnet up                                   3 masters + 4 enterprise nodes on 127.0.0.1\nsymphony devnet up --epoch-length-ms 60000 --dir net  one-minute epochs in net/\nsymphony devnet up --producer-vault                  also host producer:alice's Personal Vault"),
    ("devnet status", "symphony devnet status\nsymphony devnet status --json"),
    ("devnet down", "symphony devnet down\nsymphony devnet down --dir net"),
    ("task", "symphony task submit examples/luckin.toml\nsymphony task watch req-…\nsymphony task result req-…"),
    ("task submit", "symphony task submit examples/luckin.toml\nsymphony task submit examples/train.toml --dry-run   the fee estimate; sends nothing"),
    ("task status", "symphony task status req-…\nsymphony task status req-… --json"),
    ("task watch", "symphony task watch req-…   each lifecycle state as it happens"),
    ("task result", "symphony task result req-…                  the audience (or the model)\nsymphony task result req-… --out audience.csv\nsymphony task result req-… --out models     a training task's model, card and curve"),
    ("epoch", "symphony epoch show\nsymphony epoch close"),
    ("epoch show", "symphony epoch show --json   epoch_id, policy_version and how near each close trigger is"),
    ("epoch close", "symphony epoch close   files and passes a close proposal with the devnet's master keys"),
    ("gov", "symphony gov list\nsymphony gov propose close-epoch --as master-0\nsymphony gov vote proposal-1 --as master-1"),
    ("gov list", "symphony gov list\nsymphony gov list --json"),
    ("gov propose", "symphony gov propose policy --file policy-v2.json --as master-0\nsymphony gov propose membership --vault vault-05 --as master-0"),
    ("gov propose policy", "symphony policy show > p.json && symphony gov propose policy --file p.json --as master-0"),
    ("gov propose membership", "symphony gov propose membership --vault vault-05 --as master-0"),
    ("gov propose promote", "symphony gov propose promote --file oat-milk-vault-scoped.json --as master-0\nsymphony gov propose promote --file oat-milk-canonical.json --as master-2"),
    ("gov propose close-epoch", "symphony gov propose close-epoch --as master-0"),
    ("gov propose adjudicate", "symphony gov propose adjudicate --challenge challenge-1 --upheld --responsible operator:vault-01 --offence invalid_result --as master-0\nsymphony gov propose adjudicate --challenge challenge-1 --dismissed --as master-0"),
    ("gov propose slash", "symphony gov propose slash --actor operator:vault-01 --offence unavailability --reason \"missed 3 slices\" --as master-0"),
    ("gov vote", "symphony gov vote proposal-1 --as master-1\nsymphony gov vote proposal-1 --as master-2 --reject"),
    ("bench", "symphony bench admission --tasks 20000 --json\nsymphony bench gateway --tasks 20000 --json"),
    ("bench import", "symphony bench import --records 1000000 --json   atomic Vault import: rows/s, MB/s, prepare/write split\nsymphony bench import --records 200000 --subjects 50000"),
    ("bench admission", "symphony bench admission --tasks 50000 --concurrency 512 --json"),
    ("bench payouts", "symphony bench payouts --producers 1000000 --json\nsymphony bench payouts --producers 100000 --baseline-producers 100000"),
    ("bench gateway", "symphony bench gateway --tasks 30000 --json           closed loop (64 connections), then an open loop at 5,000 tasks/s\nsymphony bench gateway --rate 6000 --rate-connections 192\nsymphony bench gateway --concurrency 128 --rate 0      closed loop only\nsymphony bench gateway --latency-log lat.csv             every task's start and latency, as CSV"),
    ("attest", "symphony attest verify crates/symphony-attest/tests/data/sgx_quote --collateral crates/symphony-attest/tests/data/sgx_quote_collateral.json --at 2024-06-01T00:00:00Z"),
    ("attest verify", "symphony attest verify QUOTE --collateral COLLATERAL.json --policy production --json"),
];

/// `cmd` with the examples of [`EXAMPLES`] as each command's `after_help` (a command
/// that already has one keeps it).
pub fn with_examples(mut cmd: Command) -> Command {
    for (path, lines) in EXAMPLES {
        let words: Vec<&str> = path.split(' ').collect();
        cmd = apply(cmd, &words, lines);
    }
    cmd
}

fn apply(cmd: Command, path: &[&str], lines: &str) -> Command {
    match path.split_first() {
        None if cmd.get_after_help().is_some() => cmd,
        None => {
            let text: Vec<String> = lines.lines().map(|l| format!("  {l}")).collect();
            cmd.after_help(format!("Examples:\n{}", text.join("\n")))
        }
        Some((name, rest)) if cmd.find_subcommand(name).is_some() => {
            cmd.mut_subcommand(*name, |sub| apply(sub, rest, lines))
        }
        Some(_) => cmd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn walk(cmd: &Command, path: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name()).trim().to_owned();
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            if !help.contains("Example") || !help.contains("\n  symphony ") {
                missing.push(p.clone());
            }
            walk(sub, &p, missing);
        }
    }

    #[test]
    fn every_command_has_examples() {
        let cmd = with_examples(crate::Cli::command());
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "commands without examples: {missing:?}");
    }

    #[test]
    fn every_example_names_a_real_command() {
        let cmd = crate::Cli::command();
        for (path, lines) in EXAMPLES {
            let mut c = &cmd;
            for word in path.split(' ') {
                c = c
                    .find_subcommand(word)
                    .unwrap_or_else(|| panic!("{path}: no command {word:?}"));
            }
            for line in lines.lines() {
                assert!(line.starts_with("symphony "), "{path}: {line}");
            }
        }
    }
}
