//! Secret keys: how they look, how they are made, and the digest they are stored and looked up by.
//!
//! A key is shown once, when it is made; kiln keeps only its SHA-256 digest and a short prefix to
//! recognise it by. Lookups go by digest, so no comparison ever runs over a plaintext key.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::NewKey;

/// Random characters in a key: 32 of 62 symbols, about 190 bits.
const SECRET_CHARS: usize = 32;

/// SHA-256 of a key, as stored.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..SECRET_CHARS)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn new_key(plaintext: String) -> NewKey {
    NewKey {
        hash: hash(&plaintext),
        plaintext,
    }
}

/// A secret API key for an environment, in Trigger.dev's `tr_<env>_…` style.
pub fn environment_key(environment: &str) -> NewKey {
    let tag: String = environment.chars().take(8).collect();
    new_key(format!("tr_{tag}_{}", secret()))
}

/// A key for the host's admin API.
pub fn admin_key() -> NewKey {
    new_key(format!("kiln_admin_{}", secret()))
}

/// Project and environment names: 1–32 lowercase letters, digits and `-`, starting with a letter.
pub fn valid_slug(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_trigger_dev_keys_and_differ() {
        let a = environment_key("prod");
        let b = environment_key("prod");
        assert!(a.plaintext.starts_with("tr_prod_") && a.plaintext.len() == 8 + SECRET_CHARS);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.hash, hash(&a.plaintext));
        assert!(admin_key().plaintext.starts_with("kiln_admin_"));
    }

    #[test]
    fn slugs() {
        for ok in ["dev", "prod", "preview-42", "a"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "Dev",
            "1st",
            "with space",
            "x".repeat(33).as_str(),
            "dev/../prod",
        ] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}
