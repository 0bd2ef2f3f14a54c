//! Passwords: argon2id hashing and verification (in PHC string format),
//! the rules a new password must meet, the dummy hash that makes an unknown
//! user cost as much as a wrong password, and generated passwords.
//!
//! Hashing and verifying are CPU- and memory-heavy (argon2's defaults:
//! 19 MiB, 2 passes) and blocking; async callers use [`hash_blocking`] and
//! [`verify_blocking`], which run on tokio's blocking pool.

use super::{Error, Result};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted (in bytes).
pub const PASSWORD_MAX: usize = 256;
/// Length of a [`generate_password`] password.
pub const GENERATED_LEN: usize = 24;

/// A hash of a password nobody knows, made with the same parameters as
/// [`hash`]: verifying any password against it takes as long as verifying
/// against a real user's hash, and always fails.
pub(crate) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$hzUbmVSqT5xgtF9qwBFsrw$xL0TtSxdSG1Hqzvh+lzeXI6RSvaa9YFWyG2DsqoSuLI";

/// argon2id, version 0x13, the crate's default cost (m = 19 MiB, t = 2,
/// p = 1: OWASP's recommended minimum).
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Checks a new password: 8 to 256 bytes, no control characters.
pub fn check(password: &str) -> Result<()> {
    let invalid = |message: String| Error::Invalid {
        field: "password".into(),
        message,
    };
    if password.chars().count() < PASSWORD_MIN {
        return Err(invalid(format!(
            "must be at least {PASSWORD_MIN} characters long"
        )));
    }
    if password.len() > PASSWORD_MAX {
        return Err(invalid(format!(
            "must be at most {PASSWORD_MAX} bytes long"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters".into()));
    }
    Ok(())
}

/// The argon2id hash of `password` with a fresh random salt, as a PHC
/// string. Blocking (tens of milliseconds).
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// True when `password` matches the PHC string `stored`. Blocking. The
/// parameters are read from `stored`, so hashes made with other costs
/// still verify.
pub fn verify(password: &str, stored: &str) -> Result<bool> {
    let parsed = PasswordHash::new(stored).map_err(|e| Error::Hash(e.to_string()))?;
    match hasher().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(Error::Hash(e.to_string())),
    }
}

/// [`hash`] on the blocking pool.
pub async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| Error::Hash(format!("hashing task failed: {e}")))?
}

/// [`verify`] on the blocking pool; `None` verifies against the dummy hash
/// (and is always false).
pub async fn verify_blocking(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || match stored {
        Some(s) => verify(&password, &s),
        None => verify(&password, DUMMY_HASH).map(|_| false),
    })
    .await
    .map_err(|e| Error::Hash(format!("verification task failed: {e}")))?
}

/// A new random password: 24 letters and digits from the operating
/// system's generator (about 143 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(GENERATED_LEN);
    while out.len() < GENERATED_LEN {
        let mut byte = [0u8; 1];
        OsRng.fill_bytes(&mut byte);
        // 248 = 4 * 62: reject the rest so every character is equally likely.
        if usize::from(byte[0]) < 4 * ALPHABET.len() {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify("correct horse", &h).expect("verify"));
        assert!(!verify("wrong horse", &h).expect("verify"));
        assert_ne!(h, hash("correct horse").expect("hash"));
    }

    #[test]
    fn the_dummy_hash_has_the_current_parameters() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a PHC string");
        let real = hash("some password").expect("hash");
        let real = PasswordHash::new(&real).expect("a PHC string");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert!(!verify("", DUMMY_HASH).expect("verify"));
        assert!(!verify("password", DUMMY_HASH).expect("verify"));
    }

    #[test]
    fn new_passwords_are_checked() {
        assert!(check("short").is_err());
        assert!(check("long enough").is_ok());
        assert!(check("ünïcödé!").is_ok());
        assert!(check("tab\there!").is_err());
        assert!(check(&"x".repeat(PASSWORD_MAX + 1)).is_err());
    }

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(check(&a).is_ok());
        assert_ne!(a, generate_password());
    }
}
