//! Encrypted originating-IP tokens (`rules.originating_ip.mode = "encrypted"`): an address
//! only the operator can recover, for the abuse desk.
//!
//! A token is base64url (no padding) of: version byte 1, the 16-byte key id, a random 24-byte
//! nonce, and the XChaCha20-Poly1305 ciphertext of the address (4 or 16 bytes) with the
//! version and key id as associated data. The random nonce makes two messages from one
//! address carry different tokens.

use crate::keys::{Key, Ring};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use std::net::IpAddr;

const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const NONCE_LEN: usize = 24;

/// Why a token cannot be opened.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a token, or altered.
    #[error("invalid token: not made by privacy-milter, or altered")]
    Invalid,
    /// A well-formed token whose key has been destroyed (or never was in this ring).
    #[error("the token's key {0} is not in the key ring: destroyed after its retention period, so the address can no longer be recovered")]
    KeyGone(String),
}

pub fn seal(key: &Key, ip: IpAddr) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).expect("the system has randomness");
    let plain = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut header = vec![VERSION];
    header.extend_from_slice(key.id.as_bytes());
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &header,
            },
        )
        .expect("encryption of a few bytes cannot fail");
    let mut token = header;
    token.extend_from_slice(&nonce);
    token.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(token)
}

/// Opens a token (with or without the `enc:` prefix and brackets of the header value);
/// returns the address and the key id.
pub fn open(ring: &Ring, token: &str) -> Result<(IpAddr, String), OpenError> {
    let token = token.trim().trim_start_matches('[').trim_end_matches(']');
    let token = token.strip_prefix("enc:").unwrap_or(token);
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| OpenError::Invalid)?;
    if bytes.len() < 1 + ID_LEN + NONCE_LEN + 16 + 4 || bytes[0] != VERSION {
        return Err(OpenError::Invalid);
    }
    let (header, rest) = bytes.split_at(1 + ID_LEN);
    let id = std::str::from_utf8(&header[1..]).map_err(|_| OpenError::Invalid)?;
    let key = ring
        .get(id)
        .ok_or_else(|| OpenError::KeyGone(id.to_string()))?;
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let plain = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: header,
            },
        )
        .map_err(|_| OpenError::Invalid)?;
    let ip = match plain.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(plain.as_slice()).expect("length checked")),
        16 => IpAddr::from(<[u8; 16]>::try_from(plain.as_slice()).expect("length checked")),
        _ => return Err(OpenError::Invalid),
    };
    Ok((ip, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ring() -> Ring {
        Ring {
            keys: vec![Arc::new(Key {
                id: "20261126T180000Z".into(),
                created: chrono::Utc::now(),
                bytes: [3; 32],
            })],
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let ring = ring();
        let key = ring.current().unwrap();
        for ip in ["203.0.113.7", "2001:db8::42"] {
            let ip: IpAddr = ip.parse().unwrap();
            let a = seal(key, ip);
            let b = seal(key, ip);
            assert_ne!(a, b, "random nonce");
            assert_eq!(open(&ring, &a), Ok((ip, key.id.clone())));
            assert_eq!(open(&ring, &format!("[enc:{a}]")), Ok((ip, key.id.clone())));
            // Flip one character of the ciphertext.
            let mut t: Vec<char> = a.chars().collect();
            let i = t.len() - 3;
            t[i] = if t[i] == 'A' { 'B' } else { 'A' };
            let tampered: String = t.into_iter().collect();
            assert_eq!(open(&ring, &tampered), Err(OpenError::Invalid));
        }
        assert_eq!(open(&ring, "not a token"), Err(OpenError::Invalid));
        let token = seal(key, "192.0.2.1".parse().unwrap());
        assert_eq!(
            open(&Ring::default(), &token),
            Err(OpenError::KeyGone("20261126T180000Z".into()))
        );
    }
}
