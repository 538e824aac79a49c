//! Gateway request authentication: the caller signs
//! `(method, host, path, SHA-256(body), nonce, timestamp)` with ed25519; the gateway
//! refuses unknown callers, stale or future timestamps, bad signatures, requests
//! signed for another gateway (host) and replayed nonces, and rate-limits each caller
//! with a token bucket.
//!
//! The path is signed and verified exactly as sent on the request line
//! (percent-encoded, with its query), never decoded: `/v1/tasks/a%20b` is signed as
//! those bytes. The host is the gateway's address as the caller reached it (the
//! `host` header, which the gateway checks against its own names): a signed request
//! is valid at one gateway only, so its nonce, remembered by that gateway for the
//! whole timestamp window, cannot be replayed at another master's gateway.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Header carrying the caller's actor id.
pub const HEADER_CALLER: &str = "x-scp-caller";
/// Header carrying the nonce (decimal u64).
pub const HEADER_NONCE: &str = "x-scp-nonce";
/// Header carrying the timestamp (ms since the Unix epoch).
pub const HEADER_TIMESTAMP: &str = "x-scp-timestamp";
/// Header carrying the hex signature.
pub const HEADER_SIGNATURE: &str = "x-scp-signature";

/// The bytes a caller signs: `path` is the request target as sent (percent-encoded,
/// with its query), `host` the gateway's `host:port` as the caller addresses it.
pub fn signing_message(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    nonce: u64,
    ts_ms: u64,
) -> Vec<u8> {
    let body_hash = Sha256::digest(body);
    let mut h = Sha256::new();
    h.update(b"scp/gateway-request/v2\n");
    let host = host.to_ascii_lowercase();
    for part in [method.as_bytes(), host.as_bytes(), path.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body_hash);
    h.update(nonce.to_be_bytes());
    h.update(ts_ms.to_be_bytes());
    h.finalize().to_vec()
}

/// The parts of one request a caller signs.
#[derive(Clone, Copy, Debug)]
pub struct RequestTarget<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The gateway's `host:port` as the caller addresses it (the `host` header).
    pub host: &'a str,
    /// The request target as sent: percent-encoded path and query.
    pub path: &'a str,
}

/// Headers `(name, value)` authenticating one request.
pub fn sign_headers(
    key: &SigningKey,
    caller: &str,
    target: RequestTarget<'_>,
    body: &[u8],
    nonce: u64,
    ts_ms: u64,
) -> Vec<(&'static str, String)> {
    let sig = key.sign(&signing_message(
        target.method,
        target.host,
        target.path,
        body,
        nonce,
        ts_ms,
    ));
    vec![
        (HEADER_CALLER, caller.to_owned()),
        (HEADER_NONCE, nonce.to_string()),
        (HEADER_TIMESTAMP, ts_ms.to_string()),
        (HEADER_SIGNATURE, hex::encode(sig.to_bytes())),
    ]
}

/// Why a request was not authenticated (each maps to a 4xx with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header is missing or malformed.
    #[error("missing or malformed header {0}")]
    Header(&'static str),
    /// The caller is not registered.
    #[error("unknown caller {0:?}")]
    UnknownCaller(String),
    /// Timestamp outside the window.
    #[error("timestamp {ts_ms} is outside the accepted window of ±{window_ms} ms around {now_ms}")]
    Stale {
        /// Request time.
        ts_ms: u64,
        /// Server time.
        now_ms: u64,
        /// Window.
        window_ms: u64,
    },
    /// Signature does not verify.
    #[error("signature does not verify for caller {0:?}")]
    BadSignature(String),
    /// Signed for another gateway (the `host` header names none of this gateway's
    /// addresses).
    #[error("request addressed to host {host:?}, which is not this gateway ({expected}); sign each request for the gateway it is sent to")]
    WrongHost {
        /// The host the request names.
        host: String,
        /// This gateway's names.
        expected: String,
    },
    /// Nonce seen before.
    #[error("nonce {nonce} of {caller:?} was already used: replayed request refused")]
    Replayed {
        /// Caller.
        caller: String,
        /// Nonce.
        nonce: u64,
    },
    /// Rate limit exceeded.
    #[error("rate limit exceeded for caller {0:?}; retry later")]
    RateLimited(String),
}

/// Nonces seen inside the window, per gateway: a signature names its gateway (host),
/// so a nonce can only be replayed at the gateway that remembers it; task
/// submissions are also deduplicated by the replicated request id.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: BTreeMap<(String, u64), u64>,
    order: VecDeque<(u64, String, u64)>,
}

impl NonceCache {
    /// Records `(caller, nonce)` at `now_ms`; false if already seen. Entries older
    /// than `window_ms * 2` are forgotten (their timestamps are refused anyway).
    pub fn check_and_insert(
        &mut self,
        caller: &str,
        nonce: u64,
        now_ms: u64,
        window_ms: u64,
    ) -> bool {
        while let Some((t, c, n)) = self.order.front() {
            if now_ms.saturating_sub(*t) <= window_ms.saturating_mul(2) {
                break;
            }
            self.seen.remove(&(c.clone(), *n));
            self.order.pop_front();
        }
        let key = (caller.to_owned(), nonce);
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now_ms);
        self.order.push_back((now_ms, caller.to_owned(), nonce));
        true
    }
}

/// Token buckets per caller.
#[derive(Debug)]
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: BTreeMap<String, (f64, u64)>,
}

impl RateLimiter {
    /// `per_s` tokens per second, at most `burst` saved.
    pub fn new(per_s: u32, burst: u32) -> Self {
        Self {
            per_s: f64::from(per_s),
            burst: f64::from(burst),
            buckets: BTreeMap::new(),
        }
    }

    /// This gateway's share of a cluster-wide limit: `per_s` and `burst` are what a
    /// caller may send to all `gateways` together, so each enforces `1/gateways` of
    /// the rate and of the burst (at least one token, so a caller can always send a
    /// first request: across gateways the burst is `max(burst, gateways)`).
    pub fn cluster_share(per_s: u32, burst: u32, gateways: usize) -> Self {
        let n = gateways.max(1) as f64;
        Self {
            per_s: f64::from(per_s) / n,
            burst: (f64::from(burst) / n).max(1.0),
            buckets: BTreeMap::new(),
        }
    }

    /// Takes one token for `caller` at `now_ms`; false when empty.
    pub fn allow(&mut self, caller: &str, now_ms: u64) -> bool {
        let (tokens, last) = self
            .buckets
            .entry(caller.to_owned())
            .or_insert((self.burst, now_ms));
        let elapsed_s = now_ms.saturating_sub(*last) as f64 / 1000.0;
        *tokens = (*tokens + elapsed_s * self.per_s).min(self.burst);
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The authenticated parts of a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Caller.
    pub caller: String,
    /// Nonce.
    pub nonce: u64,
    /// Timestamp.
    pub ts_ms: u64,
}

/// Verifies the headers of one request (no host, replay or rate check).
pub fn verify(
    callers: &BTreeMap<String, VerifyingKey>,
    header: impl Fn(&'static str) -> Option<String>,
    target: RequestTarget<'_>,
    body: &[u8],
    now_ms: u64,
    window_ms: u64,
) -> Result<Authenticated, AuthError> {
    let caller = header(HEADER_CALLER).ok_or(AuthError::Header(HEADER_CALLER))?;
    let nonce: u64 = header(HEADER_NONCE)
        .and_then(|v| v.parse().ok())
        .ok_or(AuthError::Header(HEADER_NONCE))?;
    let ts_ms: u64 = header(HEADER_TIMESTAMP)
        .and_then(|v| v.parse().ok())
        .ok_or(AuthError::Header(HEADER_TIMESTAMP))?;
    let sig_bytes: [u8; 64] = header(HEADER_SIGNATURE)
        .and_then(|v| hex::decode(v).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(AuthError::Header(HEADER_SIGNATURE))?;
    let key = callers
        .get(&caller)
        .ok_or_else(|| AuthError::UnknownCaller(caller.clone()))?;
    if ts_ms.abs_diff(now_ms) > window_ms {
        return Err(AuthError::Stale {
            ts_ms,
            now_ms,
            window_ms,
        });
    }
    key.verify(
        &signing_message(target.method, target.host, target.path, body, nonce, ts_ms),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| AuthError::BadSignature(caller.clone()))?;
    Ok(Authenticated {
        caller,
        nonce,
        ts_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refusals() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let callers = BTreeMap::from([("a".to_owned(), key.verifying_key())]);
        let target = RequestTarget {
            method: "POST",
            host: "127.0.0.1:7001",
            path: "/v1/tasks",
        };
        let headers = sign_headers(&key, "a", target, b"{}", 5, 1_000);
        let get = |h: &[(&'static str, String)]| {
            let h = h.to_vec();
            move |name: &'static str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        };
        assert!(verify(&callers, get(&headers), target, b"{}", 1_500, 1_000).is_ok());
        assert!(matches!(
            verify(&callers, get(&headers), target, b"{ }", 1_500, 1_000),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&callers, get(&headers), target, b"{}", 9_000, 1_000),
            Err(AuthError::Stale { .. })
        ));
        // Signed for one gateway: refused by another (host), and for another path.
        for other in [
            RequestTarget {
                host: "127.0.0.1:7002",
                ..target
            },
            RequestTarget {
                path: "/v1/tasks?x=1",
                ..target
            },
        ] {
            assert!(matches!(
                verify(&callers, get(&headers), other, b"{}", 1_500, 1_000),
                Err(AuthError::BadSignature(_))
            ));
        }
        // The host is case-insensitive; the path is bytes as sent.
        let upper = RequestTarget {
            host: "LOCALHOST:1",
            path: "/v1/tasks/a%20b",
            ..target
        };
        let h = sign_headers(&key, "a", upper, b"", 6, 1_000);
        let lower = RequestTarget {
            host: "localhost:1",
            ..upper
        };
        assert!(verify(&callers, get(&h), lower, b"", 1_000, 1_000).is_ok());
        let decoded = RequestTarget {
            path: "/v1/tasks/a b",
            ..lower
        };
        assert!(verify(&callers, get(&h), decoded, b"", 1_000, 1_000).is_err());
        let mut cache = NonceCache::default();
        assert!(cache.check_and_insert("a", 5, 1_000, 1_000));
        assert!(!cache.check_and_insert("a", 5, 1_001, 1_000));
        let mut limiter = RateLimiter::new(1, 2);
        assert!(limiter.allow("a", 0) && limiter.allow("a", 0));
        assert!(!limiter.allow("a", 0));
        assert!(limiter.allow("a", 1_000));
        // Three gateways share 3 per second and a burst of 6: 2 each at once, then
        // one per second each.
        let mut share = RateLimiter::cluster_share(3, 6, 3);
        assert!(share.allow("a", 0) && share.allow("a", 0));
        assert!(!share.allow("a", 0));
        assert!(!share.allow("a", 500));
        assert!(share.allow("a", 1_000));
    }
}
