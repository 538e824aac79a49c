//! `parse`: single-record interpretation within one Vault (seed 002) — free.
//!
//! A data producer uploads one structured receipt, sealed to the Vault enclave's
//! upload key (x25519 + AES-256-GCM: the masters relay ciphertext only). The
//! planes' steps run as for every class — identity, the epoch and policy in force,
//! authorization + consent in the one Vault (`personal` scope, ε = 0: nothing is
//! released to anyone else), the envelope (one Vault, no `budget_lock_ref`: the
//! class constraints refuse anything else), `accepted → … → completed` — but no
//! escrow is locked and the settlement is priced at zero (`Settlement Plane`,
//! [`crate::planes::settlement::settle_free`]). The Vault's enclave opens the
//! upload, parses it ([`parse_receipt`]) and stores the purchase record encrypted
//! for the subject; the producer receives a commitment to the stored record and
//! the names of the fields that were read, never the masters.

use std::collections::{BTreeMap, BTreeSet};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{canonical_bytes, content_hash, tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SliceState, TaskEvent};
use symphony_master::{link_commitment, AggregateRecord, Command, SliceRecord};
use symphony_vault::record::Purchase;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::bundle::{SliceBody, SliceResultBundle};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::planes::admission::{authenticate_parts, policy_in_force};
use crate::planes::execution::advance;
use crate::planes::settlement::{fill_states, settle_free};
use crate::planes::Report;
use crate::verify::verify_slice;
use crate::NodeError;

/// Hash tag of `parse` slice commitments.
pub const PARSE_BUNDLE_TAG: &str = "scp/parse-slice-bundle/v1";

/// The fields a receipt upload may carry; all are required.
pub const RECEIPT_FIELDS: [&str; 7] = [
    "merchant",
    "category",
    "total",
    "currency",
    "time",
    "store_city",
    "store_country",
];

/// An upload sealed to a Vault enclave's upload key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedUpload {
    /// The producer's ephemeral x25519 public key.
    pub ephemeral_public: [u8; 32],
    /// AES-GCM nonce.
    pub nonce: [u8; 12],
    /// AES-256-GCM ciphertext of the receipt text.
    pub ciphertext: Vec<u8>,
}

fn upload_cipher(shared: &[u8; 32], ephemeral_public: &[u8; 32]) -> Aes256Gcm {
    let mut bytes = shared.to_vec();
    bytes.extend_from_slice(ephemeral_public);
    let key = tagged_hash("scp/upload-key/v1", &bytes).0;
    Aes256Gcm::new((&key).into())
}

/// Seals `plaintext` to the enclave upload key `recipient` (producer side; the
/// ephemeral secret and nonce are inputs: the caller draws them).
pub fn seal_upload(
    recipient: &[u8; 32],
    plaintext: &[u8],
    ephemeral_secret: [u8; 32],
    nonce: [u8; 12],
) -> Result<SealedUpload, NodeError> {
    let secret = StaticSecret::from(ephemeral_secret);
    let ephemeral_public = PublicKey::from(&secret).to_bytes();
    let shared = secret
        .diffie_hellman(&PublicKey::from(*recipient))
        .to_bytes();
    let ciphertext = upload_cipher(&shared, &ephemeral_public)
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| NodeError::Refused("the upload could not be sealed".into()))?;
    Ok(SealedUpload {
        ephemeral_public,
        nonce,
        ciphertext,
    })
}

/// Opens a sealed upload with the enclave's upload secret (Vault enclave side).
pub(crate) fn open_upload(
    secret: &StaticSecret,
    sealed: &SealedUpload,
) -> Result<Vec<u8>, NodeError> {
    let shared = secret
        .diffie_hellman(&PublicKey::from(sealed.ephemeral_public))
        .to_bytes();
    upload_cipher(&shared, &sealed.ephemeral_public)
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            sealed.ciphertext.as_slice(),
        )
        .map_err(|_| {
            NodeError::Refused(
                "the upload does not open with this Vault's upload key (sealed to another \
                 Vault, or altered in transit)"
                    .into(),
            )
        })
}

/// A receipt line or field the parser refused: which line, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt line {line}: {field}: {reason}")]
pub struct ReceiptError {
    /// 1-based line number (0: the receipt as a whole).
    pub line: usize,
    /// The field.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn receipt_err(line: usize, field: &str, reason: impl Into<String>) -> ReceiptError {
    ReceiptError {
        line,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM` (UTC) → ms since the Unix epoch.
fn parse_time(line: usize, value: &str) -> Result<u64, ReceiptError> {
    let bad = || {
        receipt_err(
            line,
            "time",
            format!("{value:?} is not YYYY-MM-DD HH:MM (UTC)"),
        )
    };
    let (date, clock) = value.split_once(' ').ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 2 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let (y, m, day, h, min) = (num(d[0])?, num(d[1])?, num(d[2])?, num(c[0])?, num(c[1])?);
    let month_days = [
        31,
        28 + i64::from((y % 4 == 0 && y % 100 != 0) || y % 400 == 0),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || day < 1
        || day > month_days[(m - 1) as usize]
        || !(0..24).contains(&h)
        || !(0..60).contains(&min)
    {
        return Err(bad());
    }
    let ms = (days_from_civil(y, m, day) * 86_400 + h * 3_600 + min * 60) * 1_000;
    u64::try_from(ms).map_err(|_| bad())
}

/// `12.50` → 1250 minor units (at most two decimals).
fn parse_total(line: usize, value: &str) -> Result<u64, ReceiptError> {
    let bad = |why: &str| receipt_err(line, "total", format!("{value:?} {why}"));
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 2 {
        return Err(bad("is not an amount with at most two decimals"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not an amount with at most two decimals"));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("is too large"))?;
    let frac: u64 = format!("{frac:0<2}")
        .parse()
        .map_err(|_| bad("is malformed"))?;
    let minor = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(|| bad("is too large"))?;
    if minor == 0 {
        return Err(bad("must be positive"));
    }
    Ok(minor)
}

/// The minimal parser of a structured receipt upload: one `field: value` per line
/// (blank lines and `#` comments ignored), every field of [`RECEIPT_FIELDS`]
/// exactly once. Errors name the line and the field.
pub fn parse_receipt(text: &str) -> Result<Purchase, ReceiptError> {
    let mut fields: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| receipt_err(line, l, "expected `field: value`"))?;
        let (k, v) = (k.trim(), v.trim());
        let Some(&known) = RECEIPT_FIELDS.iter().find(|f| **f == k) else {
            return Err(receipt_err(
                line,
                k,
                format!(
                    "unknown field (expected one of {})",
                    RECEIPT_FIELDS.join(", ")
                ),
            ));
        };
        if v.is_empty() {
            return Err(receipt_err(line, k, "empty value"));
        }
        if fields.insert(known, (line, v)).is_some() {
            return Err(receipt_err(line, k, "given twice"));
        }
    }
    let get = |f: &str| {
        fields
            .get(f)
            .copied()
            .ok_or_else(|| receipt_err(0, f, "missing"))
    };
    let code = |f: &str, len: usize| -> Result<String, ReceiptError> {
        let (line, v) = get(f)?;
        if v.len() != len || !v.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(receipt_err(
                line,
                f,
                format!("{v:?} is not a {len}-letter upper-case code"),
            ));
        }
        Ok(v.to_owned())
    };
    let (total_line, total) = get("total")?;
    let (time_line, time) = get("time")?;
    Ok(Purchase {
        brand: get("merchant")?.1.to_owned(),
        category: get("category")?.1.to_owned(),
        amount_minor: parse_total(total_line, total)?,
        currency: code("currency", 3)?,
        ts_ms: parse_time(time_line, time)?,
        store_city: get("store_city")?.1.to_owned(),
        store_country: code("store_country", 2)?,
    })
}

/// What a master sends the one Vault of a parse task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParseAssignment {
    /// The slice.
    pub slice_id: SliceId,
    /// The admitted envelope.
    pub envelope: TaskEnvelope,
    /// The producer's subject id in this Vault.
    pub subject: SubjectId,
    /// The sealed upload (its hash is the envelope's `upload_hash`).
    pub upload: SealedUpload,
    /// Time of the run, ms.
    pub evaluate_at_ms: u64,
}

/// The body of a parse slice: what the producer gets back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseBody {
    /// The slice.
    pub slice_id: SliceId,
    /// The Vault.
    pub vault_id: VaultId,
    /// The envelope it ran under.
    pub envelope_hash: Digest,
    /// Commitment to the stored record (keyed by the task: meaningless elsewhere).
    pub record_commitment: Digest,
    /// The fields that were read.
    pub fields: Vec<String>,
    /// Subjects whose records were touched (1).
    pub subjects_evaluated: u64,
    /// The stored record's data quality score (seed 002's five factors).
    pub quality: symphony_economics::quality::QualityScore,
}

impl SliceBody for ParseBody {
    const TAG: &'static str = PARSE_BUNDLE_TAG;
    fn vault_id(&self) -> &VaultId {
        &self.vault_id
    }
    fn envelope_hash(&self) -> Digest {
        self.envelope_hash
    }
    fn subjects_evaluated(&self) -> u64 {
        self.subjects_evaluated
    }
    fn epsilon_committed_micro(&self) -> u64 {
        0
    }
}

/// Commitment to a stored record, keyed by the task.
pub fn record_commitment(envelope: &TaskEnvelope, record: &Purchase) -> Result<Digest, NodeError> {
    let bytes = canonical_bytes(&(envelope.hash(), record))
        .map_err(|e| NodeError::Encoding(e.to_string()))?;
    Ok(tagged_hash("scp/parse-record/v1", &bytes))
}

/// A producer's signed parse request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParseRequest {
    /// The producer (actor id).
    pub producer: String,
    /// The Vault that holds the producer's records.
    pub vault: VaultId,
    /// The producer's subject id in that Vault.
    pub subject: SubjectId,
    /// The sealed receipt.
    pub upload: SealedUpload,
    /// Replay protection.
    pub nonce: u64,
    /// The producer's public key.
    pub public_key: [u8; 32],
    /// ed25519 signature over [`ParseRequest::hash`].
    pub signature: Vec<u8>,
}

impl ParseRequest {
    /// The hash the producer signs.
    pub fn hash(
        producer: &str,
        vault: &VaultId,
        subject: &SubjectId,
        upload: &SealedUpload,
        nonce: u64,
    ) -> Result<Digest, NodeError> {
        let bytes = canonical_bytes(&(producer, vault, subject, upload, nonce))
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        Ok(tagged_hash("scp/parse-request/v1", &bytes))
    }

    /// Signs a parse request.
    pub fn sign(
        producer: &str,
        vault: VaultId,
        subject: SubjectId,
        upload: SealedUpload,
        nonce: u64,
        key: &SigningKey,
    ) -> Result<Self, NodeError> {
        let h = Self::hash(producer, &vault, &subject, &upload, nonce)?;
        Ok(ParseRequest {
            producer: producer.to_owned(),
            vault,
            subject,
            upload,
            nonce,
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&h.0).to_bytes().to_vec(),
        })
    }
}

/// What a parse task produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseOutcome {
    /// The pipeline's report (lifecycle, fee 0, settlement, epoch).
    pub task_id: String,
    /// Envelope hash.
    pub envelope_hash: String,
    /// Lifecycle states.
    pub states: Vec<String>,
    /// Why it was rejected, if it was.
    pub reason: Option<String>,
    /// Commitment to the stored record.
    pub record_commitment: String,
    /// Fields read.
    pub fields: Vec<String>,
    /// Fee charged (parse is free).
    pub fee_total: u64,
    /// Settlement state.
    pub settlement_state: Option<String>,
    /// Attestations verified.
    pub attestations_verified: u32,
    /// Epoch.
    pub epoch_id: u64,
    /// The stored record's data quality score (none when nothing was stored).
    pub quality: Option<symphony_economics::quality::QualityScore>,
}

/// The plan a parse task runs: the receipt schema mapped to the canonical
/// `commerce` purchase attributes.
fn parse_plan_hash() -> Result<Digest, NodeError> {
    content_hash("scp/parse-plan/receipt/v1", &RECEIPT_FIELDS.to_vec())
        .map_err(|e| NodeError::Encoding(e.to_string()))
}

/// A parse task that passed admission.
struct AdmittedParse<'e> {
    actor: ActorId,
    endpoint: &'e dyn EnterpriseEndpoint,
    task_id: TaskId,
    envelope: TaskEnvelope,
    vault_id: VaultId,
    epoch: EpochId,
}

/// The Admission Plane of a parse task: identity, the one Vault's authorization and
/// the subject's personal-use consent, the envelope (no escrow: free).
fn admit_parse<'e>(
    master: &mut MasterServices,
    endpoints: &[&'e dyn EnterpriseEndpoint],
    req: &ParseRequest,
    obs: &mut dyn Observer,
) -> Result<AdmittedParse<'e>, NodeError> {
    // --- Admission Plane
    let request_hash = ParseRequest::hash(
        &req.producer,
        &req.vault,
        &req.subject,
        &req.upload,
        req.nonce,
    )?;
    let actor = authenticate_parts(
        master,
        &req.producer,
        &req.public_key,
        &req.signature,
        &request_hash,
    )?;
    obs.step(
        "admission",
        &format!("producer {actor} authenticated (ed25519)"),
    );
    let endpoint: &'e dyn EnterpriseEndpoint = *endpoints
        .iter()
        .find(|e| e.vault_id() == &req.vault)
        .ok_or_else(|| NodeError::Refused(format!("no Vault {} in this network", req.vault)))?;
    let semantic_version = master.semantic.semantic_version();
    let (epoch, policy_version, _params) = policy_in_force(master, semantic_version)?;
    let task_id = master.next_task_id(&request_hash)?;
    let reply = endpoint.parse_admit(&task_id, &actor, &req.subject, master.now_ms)?;
    let upload_hash = content_hash("scp/parse-upload/v1", &req.upload)
        .map_err(|e| NodeError::Encoding(e.to_string()))?;
    let envelope = TaskEnvelope::seal(EnvelopeBody {
        task_id: task_id.clone(),
        task_class: TaskClass::Parse,
        caller: CallerContext {
            actor_id: actor.clone(),
            public_key: req.public_key,
            request_hash,
            nonce: req.nonce,
            admitted_at_ms: master.now_ms,
        },
        authorization: Authorization {
            granted_by: "vault-permits:parse".into(),
            vault_permits: BTreeSet::from([reply.vault_id.clone()]),
        },
        consent_refs: vec![ConsentRef {
            vault_id: reply.vault_id.clone(),
            usage_scope: UsageScope::Personal,
            snapshot_commitment: reply.snapshot_commitment,
            eligible_subjects: 1,
        }],
        semantic_version,
        policy_version,
        epoch_id: epoch,
        budget_reservation: BudgetReservation {
            usage_scope: UsageScope::Personal,
            epsilon_per_subject: Epsilon::ZERO,
            subjects_reserved: 0,
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: BTreeSet::from([reply.vault_id.clone()]),
            minimum_vault_quorum: 1,
            aggregation_method: AggregationMethod::Single,
        },
        budget_lock_ref: None,
        iteration_policy: None,
        resolved_plan_hash: parse_plan_hash()?,
        constraints: BTreeMap::from([("upload_hash".to_string(), upload_hash.to_hex())]),
        deadline_ms: master.now_ms + 600_000,
    })?;
    master.masters.submit(Command::AdmitTask {
        envelope: Box::new(envelope.clone()),
    })?;
    obs.step(
        "accepted",
        &format!(
            "TaskEnvelope {} (free: no escrow)",
            &envelope.hash().to_hex()[..16]
        ),
    );
    Ok(AdmittedParse {
        actor,
        endpoint,
        task_id,
        envelope,
        vault_id: reply.vault_id,
        epoch,
    })
}

/// Runs a parse task through the planes' steps: admission (one Vault, free),
/// execution in the Vault's enclave, free settlement, delivery to the producer.
pub fn run_parse(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    req: &ParseRequest,
    obs: &mut dyn Observer,
) -> Result<ParseOutcome, NodeError> {
    let AdmittedParse {
        actor,
        endpoint,
        task_id,
        envelope,
        vault_id,
        epoch,
    } = admit_parse(master, endpoints, req, obs)?;
    let mut report = Report {
        task_id: task_id.to_string(),
        envelope_hash: envelope.hash().to_hex(),
        epoch_id: epoch.0,
        ..Report::default()
    };
    // --- Execution Plane
    advance(master, &task_id, TaskEvent::BeginResolution, None, obs)?;
    advance(master, &task_id, TaskEvent::Dispatch, None, obs)?;
    let assignment = ParseAssignment {
        slice_id: SliceId {
            sub_task: SubTaskId {
                parent: task_id.clone(),
                round: 0,
            },
            vault: vault_id.clone(),
        },
        envelope: envelope.clone(),
        subject: req.subject.clone(),
        upload: req.upload.clone(),
        evaluate_at_ms: master.now_ms,
    };
    let executed = endpoint.execute_parse_slice(&assignment).and_then(|b| {
        verify_slice(&master.verifier_for(&envelope)?, &envelope, &b)
            .map(|ev| (b, ev))
            .map_err(|e| NodeError::Refused(e.to_string()))
    });
    let (bundle, evidence) = match executed {
        Ok(x) => x,
        Err(e) => {
            master.masters.submit(Command::RecordSlice {
                task_id: task_id.clone(),
                vault_id: vault_id.clone(),
                record: SliceRecord {
                    state: SliceState::Failed,
                    commitment: Digest::default(),
                    subjects_evaluated: 0,
                    epsilon_committed_micro: 0,
                    enclave_kind: None,
                },
            })?;
            obs.step("rejected", &e.to_string());
            advance(
                master,
                &task_id,
                TaskEvent::Reject,
                Some(e.to_string()),
                obs,
            )?;
            fill_states(master, &task_id, &mut report);
            return Ok(outcome(report, None));
        }
    };
    master.masters.submit(Command::RecordSlice {
        task_id: task_id.clone(),
        vault_id: vault_id.clone(),
        record: SliceRecord {
            state: SliceState::Verified,
            commitment: bundle.commitment,
            subjects_evaluated: 1,
            epsilon_committed_micro: 0,
            enclave_kind: Some(evidence.attestation.kind()),
        },
    })?;
    report.attestations_verified = 1;
    let result_hash = bundle.body.record_commitment;
    let inputs = link_commitment("scp/aggregation-inputs/v1", &[bundle.commitment]);
    master.masters.submit(Command::RecordAggregate {
        task_id: task_id.clone(),
        record: AggregateRecord {
            commitment: link_commitment("scp/aggregate/v1", &[inputs, result_hash]),
            eligible_count: 1,
            delivered_count: 1,
            result_hash,
            // Parsing is the slice itself: there is no separate aggregation enclave.
            enclave_kind: evidence.attestation.kind(),
        },
    })?;
    advance(master, &task_id, TaskEvent::ExecutionFinished, None, obs)?;
    // --- Settlement Plane: verified above (commitment + attestation), priced at zero
    advance(master, &task_id, TaskEvent::VerificationAccepted, None, obs)?;
    report.certificate_signatures = settle_free(master, &task_id, epoch, obs)?;
    report.settlement_state = Some("finalized".into());
    master.masters.submit(Command::RecordDelivery {
        task_id: task_id.clone(),
        recipient: actor.clone(),
        result_hash,
        count: 1,
        at_ms: master.now_ms,
    })?;
    obs.step(
        "delivered",
        &format!("record commitment to {actor} (audit event recorded)"),
    );
    report.delivered = true;
    fill_states(master, &task_id, &mut report);
    Ok(outcome(report, Some(bundle.body)))
}

fn outcome(r: Report, body: Option<ParseBody>) -> ParseOutcome {
    ParseOutcome {
        task_id: r.task_id,
        envelope_hash: r.envelope_hash,
        states: r.states,
        reason: r.reason,
        record_commitment: body
            .as_ref()
            .map(|b| b.record_commitment.to_hex())
            .unwrap_or_default(),
        quality: body.as_ref().map(|b| b.quality.clone()),
        fields: body.map(|b| b.fields).unwrap_or_default(),
        fee_total: 0,
        settlement_state: r.settlement_state,
        attestations_verified: r.attestations_verified,
        epoch_id: r.epoch_id,
    }
}

/// A parse slice's result type (for the endpoint trait).
pub type ParseBundle = SliceResultBundle<ParseBody>;

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIPT: &str = "# Luckin Coffee, Raffles Place\nmerchant: Luckin Coffee\n\
        category: coffee\ntotal: 5.90\ncurrency: SGD\ntime: 2026-11-20 08:30\n\
        store_city: Singapore\nstore_country: SG\n";

    #[test]
    fn a_receipt_parses_to_a_purchase() {
        let p = parse_receipt(RECEIPT).unwrap();
        assert_eq!(p.brand, "Luckin Coffee");
        assert_eq!(p.amount_minor, 590);
        assert_eq!(p.currency, "SGD");
        // 2026-11-20T08:30:00Z
        assert_eq!(p.ts_ms, 1_795_163_400_000);
        assert_eq!(p.store_country, "SG");
    }

    #[test]
    fn bad_receipts_name_the_line_and_field() {
        let cases = [
            (
                RECEIPT.replace("total: 5.90", "total: 5.905"),
                "line 4: total",
            ),
            (RECEIPT.replace("total: 5.90", "total: -3"), "line 4: total"),
            (
                RECEIPT.replace("time: 2026-11-20 08:30", "time: 2026-02-30 08:30"),
                "line 6: time",
            ),
            (
                RECEIPT.replace("currency: SGD", "currency: sgd"),
                "line 5: currency",
            ),
            (
                RECEIPT.replace("store_city: Singapore\n", ""),
                "line 0: store_city: missing",
            ),
            (
                format!("{RECEIPT}merchant: again\n"),
                "line 9: merchant: given twice",
            ),
            (format!("{RECEIPT}tip: 1\n"), "line 9: tip: unknown field"),
            (format!("{RECEIPT}no colon here\n"), "line 9: no colon here"),
        ];
        for (text, expected) in cases {
            let e = parse_receipt(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
    }

    #[test]
    fn a_sealed_upload_opens_only_with_the_right_key_and_unaltered() {
        let vault_secret = StaticSecret::from([7u8; 32]);
        let vault_public = PublicKey::from(&vault_secret).to_bytes();
        let sealed = seal_upload(&vault_public, RECEIPT.as_bytes(), [9u8; 32], [1u8; 12]).unwrap();
        assert!(
            !sealed.ciphertext.windows(7).any(|w| w == b"Luckin "),
            "ciphertext carries plaintext"
        );
        assert_eq!(
            open_upload(&vault_secret, &sealed).unwrap(),
            RECEIPT.as_bytes()
        );
        let other = StaticSecret::from([8u8; 32]);
        assert!(open_upload(&other, &sealed).is_err());
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert!(open_upload(&vault_secret, &altered).is_err());
    }
}
