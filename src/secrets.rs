//! Encryption at rest for environment variables: XChaCha20-Poly1305 under the host's secrets key.
//!
//! The key lives in its own file, `<data-dir>/secrets.key` (made on first start, readable by its
//! owner only), not in the database: a copy of `kiln.db` alone does not reveal a value. Each value
//! is sealed with a fresh random 24-byte nonce and bound to where it is stored (its environment
//! and name, as associated data), so a ciphertext moved to another row does not open.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// The file in the data dir holding the key.
pub const KEY_FILE: &str = "secrets.key";

/// Seals and opens values with the host's key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

/// A sealed value: its nonce and ciphertext (with the tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    /// Loads the key from `dir`, making one (32 random bytes, hex, mode 0600) if there is none.
    pub fn open_or_create(dir: &Path) -> anyhow::Result<SecretBox> {
        let path = dir.join(KEY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let text = hex(&key);
                write_private(&path, &text).with_context(|| {
                    format!(
                        "cannot write {}; check the data dir is writable",
                        path.display()
                    )
                })?;
                text
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        SecretBox::from_text(&text, path)
    }

    /// Loads the key from `path`, which must exist: hosts sharing a database are given the
    /// first host's key file, never a new one.
    pub fn open_file(path: &Path) -> anyhow::Result<SecretBox> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the secrets key {}; give the file holding the key every host on \
                 this database uses (a copy of the first host's {KEY_FILE})",
                path.display()
            )
        })?;
        SecretBox::from_text(&text, path.to_path_buf())
    }

    fn from_text(text: &str, path: PathBuf) -> anyhow::Result<SecretBox> {
        let key = unhex(text.trim()).filter(|k| k.len() == 32).with_context(|| {
            format!(
                "{} is not a secrets key (64 hex digits); restore it from a backup, or move it away to start without the stored environment variables",
                path.display()
            )
        })?;
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("a 32-byte key"),
            path,
        })
    }

    /// A box with a key of its own, for tests.
    pub fn ephemeral() -> SecretBox {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("a 32-byte key"),
            path: PathBuf::new(),
        }
    }

    /// The key's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fixed value sealed with this key (nonce, then ciphertext): stored once per database,
    /// so a later host can tell whether its key is the same ([`SecretBox::opens_check`]).
    pub fn seal_check(&self) -> Vec<u8> {
        let sealed = self.seal(CHECK_CONTEXT, CHECK_VALUE);
        [sealed.nonce, sealed.ciphertext].concat()
    }

    /// Whether this key opens a value [`SecretBox::seal_check`] made.
    pub fn opens_check(&self, stored: &[u8]) -> bool {
        if stored.len() < 24 {
            return false;
        }
        let (nonce, ciphertext) = stored.split_at(24);
        let sealed = Sealed {
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        };
        self.open(CHECK_CONTEXT, &sealed)
            .is_ok_and(|v| v == CHECK_VALUE)
    }

    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// The plaintext, or an error naming the key file if the key does not open it.
    pub fn open(&self, context: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.nonce.len() != 24 {
            return Err(SecretError(self.path.clone()));
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| SecretError(self.path.clone()))
    }
}

/// What [`SecretBox::seal_check`] seals, and where.
const CHECK_CONTEXT: &[u8] = b"kiln\0secrets-key-check";
const CHECK_VALUE: &[u8] = b"the secrets key of this database";

/// A stored value the host's key does not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored environment variable does not decrypt with the key in {0}; the key file was replaced or the database was moved from another host — restore that host's {KEY_FILE}"
)]
pub struct SecretError(PathBuf);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = SecretBox::open_or_create(dir.path()).unwrap();
        let sealed = secrets.seal(b"env_1\0API_KEY", b"s3cret");
        assert_ne!(sealed.ciphertext, b"s3cret");
        assert_eq!(secrets.open(b"env_1\0API_KEY", &sealed).unwrap(), b"s3cret");
        assert!(
            secrets.open(b"env_2\0API_KEY", &sealed).is_err(),
            "moved to another row"
        );
        // The same key comes back from the file; another key does not open the value.
        let again = SecretBox::open_or_create(dir.path()).unwrap();
        assert_eq!(again.open(b"env_1\0API_KEY", &sealed).unwrap(), b"s3cret");
        let error = SecretBox::ephemeral()
            .open(b"env_1\0API_KEY", &sealed)
            .unwrap_err();
        assert!(error.to_string().contains("restore"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_key_tells_its_own_check_value_from_another_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::open_or_create(dir.path()).unwrap();
        let check = first.seal_check();
        let same = SecretBox::open_file(&dir.path().join(KEY_FILE)).unwrap();
        assert!(same.opens_check(&check));
        assert!(!SecretBox::ephemeral().opens_check(&check));
        assert!(!same.opens_check(&check[..10]), "too short to hold a nonce");
        let missing = SecretBox::open_file(&dir.path().join("absent.key")).unwrap_err();
        assert!(format!("{missing:#}").contains("first host"), "{missing:#}");
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not hex").unwrap();
        let error = SecretBox::open_or_create(dir.path()).unwrap_err();
        assert!(format!("{error:#}").contains("64 hex digits"), "{error:#}");
    }
}
