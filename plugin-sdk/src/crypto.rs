//! Cryptographic primitives computed by the proxy: the WIT package's
//! `crypto` interface.
//!
//! Inside the sandbox there are no AES or SHA instructions, and AES-GCM
//! costs about 15 ns a byte; the host runs the same functions natively with
//! the CPU's instructions, in well under 1 ns a byte. A detector that must
//! decrypt a first flight (QUIC's Initial packets, whose keys anyone can
//! derive) calls these instead of bundling a cipher. Outside WebAssembly
//! (native tests, and the proxy itself, which serves the calls with this
//! very code) they run natively with the same results.
//!
//! Every function is pure: same arguments, same answer. A length the
//! function does not allow gives `None`, as the WIT interface says.

/// Bytes of an AES-128 block.
pub const BLOCK_LEN: usize = 16;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Most bytes HKDF-Expand with SHA-256 can give (255 blocks of 32).
pub const HKDF_SHA256_MAX: usize = 255 * 32;
/// Most bytes AES takes in one call (a UDP datagram's worth), so that a
/// call the host makes for a plugin stays within microseconds.
pub const AES_MAX: usize = 64 * 1024;

/// HKDF-Extract with HMAC-SHA256 (RFC 5869): the pseudorandom key.
pub fn hkdf_sha256_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    #[cfg(target_arch = "wasm32")]
    {
        let prk = crate::__bindings::refractium::plugin::crypto::hkdf_sha256_extract(salt, ikm);
        // The host always answers 32 bytes.
        prk.try_into().unwrap_or([0; 32])
    }
    #[cfg(not(target_arch = "wasm32"))]
    native::hkdf_sha256_extract(salt, ikm)
}

/// HKDF-Expand with HMAC-SHA256: `len` bytes from the pseudorandom key
/// `prk` (at least 32 bytes) and `info`; `None` past [`HKDF_SHA256_MAX`].
pub fn hkdf_sha256_expand(prk: &[u8], info: &[u8], len: usize) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::refractium::plugin::crypto::hkdf_sha256_expand(prk, info, u32::try_from(len).ok()?)
    }
    #[cfg(not(target_arch = "wasm32"))]
    native::hkdf_sha256_expand(prk, info, len)
}

/// AES-128 encryption of each 16-byte block of `blocks` on its own (ECB),
/// e.g. a QUIC header protection mask; `None` unless `blocks` is whole
/// blocks, at most [`AES_MAX`] bytes.
pub fn aes128_ecb_encrypt(key: &[u8; 16], blocks: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::refractium::plugin::crypto::aes128_ecb_encrypt(key, blocks)
    }
    #[cfg(not(target_arch = "wasm32"))]
    native::aes128_ecb_encrypt(key, blocks)
}

/// AEAD_AES_128_GCM decryption (RFC 5116): `sealed` is the ciphertext with
/// its 16-byte tag at the end, at most [`AES_MAX`] bytes in all. The
/// plaintext, or `None` when it does not authenticate.
pub fn aes128_gcm_open(key: &[u8; 16], nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::refractium::plugin::crypto::aes128_gcm_open(key, nonce, aad, sealed)
    }
    #[cfg(not(target_arch = "wasm32"))]
    native::aes128_gcm_open(key, nonce, aad, sealed)
}

/// The native implementations: what native builds call, and what the proxy
/// runs when a plugin calls the `crypto` interface. They take the lengths
/// the WIT interface takes (any), and check them.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::{AES_MAX, BLOCK_LEN, HKDF_SHA256_MAX, TAG_LEN};
    use aes::Aes128;
    use aes::cipher::{BlockEncrypt, KeyInit};
    use aes_gcm::Aes128Gcm;
    use aes_gcm::aead::AeadInPlace;
    use hkdf::Hkdf;
    use sha2::Sha256;

    /// See [`super::hkdf_sha256_extract`].
    pub fn hkdf_sha256_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
        Hkdf::<Sha256>::extract(Some(salt), ikm).0.into()
    }

    /// See [`super::hkdf_sha256_expand`].
    pub fn hkdf_sha256_expand(prk: &[u8], info: &[u8], len: usize) -> Option<Vec<u8>> {
        if len > HKDF_SHA256_MAX {
            return None;
        }
        let hkdf = Hkdf::<Sha256>::from_prk(prk).ok()?;
        let mut out = vec![0; len];
        hkdf.expand(info, &mut out).ok()?;
        Some(out)
    }

    /// See [`super::aes128_ecb_encrypt`].
    pub fn aes128_ecb_encrypt(key: &[u8], blocks: &[u8]) -> Option<Vec<u8>> {
        if !blocks.len().is_multiple_of(BLOCK_LEN) || blocks.len() > AES_MAX {
            return None;
        }
        let cipher = Aes128::new_from_slice(key).ok()?;
        let mut out = blocks.to_vec();
        for block in out.chunks_exact_mut(BLOCK_LEN) {
            cipher.encrypt_block(aes::Block::from_mut_slice(block));
        }
        Some(out)
    }

    /// See [`super::aes128_gcm_open`].
    pub fn aes128_gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        if sealed.len() > AES_MAX {
            return None;
        }
        let tag_at = sealed.len().checked_sub(TAG_LEN)?;
        let (ciphertext, tag) = sealed.split_at(tag_at);
        let tag: [u8; TAG_LEN] = tag.try_into().ok()?;
        let aead = Aes128Gcm::new_from_slice(key).ok()?;
        let mut plain = ciphertext.to_vec();
        aead.decrypt_in_place_detached(&nonce.into(), aad, &mut plain, &tag.into()).ok()?;
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::hex;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes128Gcm, KeyInit};

    /// RFC 5869 test case 1.
    #[test]
    fn hkdf_matches_rfc_5869() {
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let prk = hkdf_sha256_extract(&hex("000102030405060708090a0b0c"), &ikm);
        assert_eq!(prk.to_vec(), hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"));
        let okm = hkdf_sha256_expand(&prk, &hex("f0f1f2f3f4f5f6f7f8f9"), 42).expect("42 bytes");
        assert_eq!(okm, hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
        assert_eq!(hkdf_sha256_expand(&prk, b"", HKDF_SHA256_MAX + 1), None);
        assert_eq!(hkdf_sha256_expand(&prk[..31], b"", 16), None, "a key shorter than a hash");
    }

    /// FIPS-197 appendix C.1, twice: each block on its own.
    #[test]
    fn aes_ecb_matches_fips_197() {
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().expect("16 bytes");
        let block = hex("00112233445566778899aabbccddeeff");
        let out = aes128_ecb_encrypt(&key, &[block.clone(), block].concat()).expect("whole blocks");
        let want = hex("69c4e0d86a7b0430d8cdb78070b4c55a");
        assert_eq!(out, [want.clone(), want].concat());
        assert_eq!(aes128_ecb_encrypt(&key, &[0; 15]), None);
        assert_eq!(aes128_ecb_encrypt(&key, &[0; AES_MAX]).map(|b| b.len()), Some(AES_MAX));
        assert_eq!(aes128_ecb_encrypt(&key, &[0; AES_MAX + BLOCK_LEN]), None, "past the cap");
        assert_eq!(native::aes128_ecb_encrypt(&key[..15], &[0; 16]), None, "a short key");
    }

    #[test]
    fn gcm_opens_what_was_sealed_and_nothing_altered() {
        let key = [7u8; 16];
        let nonce = [9u8; 12];
        let mut sealed = b"the client's first flight".to_vec();
        let tag =
            Aes128Gcm::new(&key.into()).encrypt_in_place_detached(&nonce.into(), b"header", &mut sealed).expect("seal");
        sealed.extend_from_slice(&tag);
        assert_eq!(
            aes128_gcm_open(&key, &nonce, b"header", &sealed).as_deref(),
            Some(&b"the client's first flight"[..])
        );
        assert_eq!(aes128_gcm_open(&key, &nonce, b"Header", &sealed), None, "other aad");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(aes128_gcm_open(&key, &nonce, b"header", &sealed), None, "altered tag");
        assert_eq!(aes128_gcm_open(&key, &nonce, b"", &[0; 15]), None, "shorter than a tag");
        assert_eq!(aes128_gcm_open(&key, &nonce, b"", &vec![0; AES_MAX + 1]), None, "past the cap");
        assert_eq!(native::aes128_gcm_open(&key, &nonce[..11], b"", &[0; 16]), None, "a short nonce");
    }
}
