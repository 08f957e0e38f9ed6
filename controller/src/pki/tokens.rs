//! Bootstrap tokens: random secrets an agent presents once at enrollment. The controller
//! stores only their SHA-256 hash, with labels, expiry and remaining uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prefix of every token, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "bwt_";

/// A new token: `bwt_` and 256 random bits in hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The SHA-256 of a token, hex: how it is stored and looked up.
pub fn hash(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()))
}

/// The public name of a token: the first 12 hex digits of its hash (safe to show and log).
pub fn token_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// A token as stored in the cluster (record kind `bulwark.token`, key: the token id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub hash: String,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub expires_at: u64,
    pub uses_left: u32,
    pub uses_total: u32,
    pub revoked: bool,
    /// The admin who created it.
    pub created_by: String,
}

/// Why a token cannot be used; each fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("no bootstrap token was given")]
    Empty,
    #[error("the bootstrap token is not valid (unknown to this cluster)")]
    Unknown,
    #[error("the bootstrap token {0} has expired")]
    Expired(String),
    #[error("the bootstrap token {0} has been revoked")]
    Revoked(String),
    #[error("the bootstrap token {0} has no uses left")]
    UsedUp(String),
}

impl TokenRecord {
    /// Checks the token can enroll one more agent at `now` (seconds since the epoch).
    pub fn check(&self, now: u64) -> Result<(), TokenRefusal> {
        let id = token_id(&self.hash);
        if self.revoked {
            return Err(TokenRefusal::Revoked(id));
        }
        if now >= self.expires_at {
            return Err(TokenRefusal::Expired(id));
        }
        if self.uses_left == 0 {
            return Err(TokenRefusal::UsedUp(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        TokenRecord {
            hash: hash("bwt_x"),
            labels: BTreeMap::new(),
            created_at: 100,
            expires_at: 200,
            uses_left: 1,
            uses_total: 1,
            revoked: false,
            created_by: "ops".into(),
        }
    }

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert!(!hash(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn refusals_name_the_reason() {
        let id = token_id(&hash("bwt_x"));
        assert_eq!(record().check(150), Ok(()));
        assert_eq!(record().check(200), Err(TokenRefusal::Expired(id.clone())));
        let used = TokenRecord { uses_left: 0, ..record() };
        assert_eq!(
            used.check(150).unwrap_err().to_string(),
            format!("the bootstrap token {id} has no uses left")
        );
        let revoked = TokenRecord { revoked: true, ..record() };
        assert_eq!(revoked.check(150), Err(TokenRefusal::Revoked(id)));
    }
}
