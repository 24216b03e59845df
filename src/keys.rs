//! Secret keys: how they look, how they are made, the digest they are stored and looked up by,
//! and the HMAC-SHA256 that signs with them.
//!
//! A key is shown once, when it is made; kiln keeps its SHA-256 digest and a short prefix to
//! recognise it by, and a copy sealed under the host's secrets key (see `secrets`) so it can check
//! the public access tokens the key signs — a copy of the database alone reveals no key. Lookups
//! go by digest, so no comparison ever runs over a plaintext key.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::secrets::{Sealed, SecretBox};
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
        sealed: None,
    }
}

/// Binds a key's sealed copy to its digest, so a copy moved to another key's row does not open.
fn sealing_context(hash: &[u8; 32]) -> Vec<u8> {
    [b"api-key\0".as_slice(), hash].concat()
}

/// The key with its sealed copy, as it is stored.
pub fn sealed(mut key: NewKey, secrets: &SecretBox) -> NewKey {
    key.sealed = Some(seal(&key.plaintext, secrets));
    key
}

/// A key's sealed copy.
pub fn seal(plaintext: &str, secrets: &SecretBox) -> Sealed {
    secrets.seal(&sealing_context(&hash(plaintext)), plaintext.as_bytes())
}

/// The key a sealed copy holds, if it opens with the host's key and is the key of `digest`.
pub fn open(digest: &[u8; 32], sealed: &Sealed, secrets: &SecretBox) -> Option<String> {
    let plain = secrets.open(&sealing_context(digest), sealed).ok()?;
    let key = String::from_utf8(plain).ok()?;
    same(&hash(&key), digest).then_some(key)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn comparison_needs_equal_bytes() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn a_sealed_key_opens_only_as_the_key_of_its_digest() {
        let secrets = SecretBox::ephemeral();
        let key = sealed(environment_key("dev"), &secrets);
        let copy = key.sealed.clone().unwrap();
        assert_eq!(
            open(&key.hash, &copy, &secrets),
            Some(key.plaintext.clone())
        );
        let other = environment_key("dev");
        assert_eq!(
            open(&other.hash, &copy, &secrets),
            None,
            "moved to another key's row"
        );
        assert_eq!(open(&key.hash, &copy, &SecretBox::ephemeral()), None);
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
