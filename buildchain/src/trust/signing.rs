//! OpenPGP signing (SPEC §12) with rPGP (`pgp`, the crate the `rpm` crate signs with).
//!
//! The key is an armored secret key read from `--signing-key FILE` / `BUILDCHAIN_SIGNING_KEY`;
//! its passphrase, when it has one, is the first line of `BUILDCHAIN_SIGNING_PASSPHRASE_FILE`.
//! Signatures are v4, SHA-256, created at the build time (`SOURCE_DATE_EPOCH`) or, when the key
//! is younger than that, at the key's creation time (verifiers refuse a signature older than its
//! key), so a build with a deterministic key algorithm (RSA, Ed25519) signs byte-identically.
//!
//! The signing key is chosen as the `rpm` crate chooses it: the first secret subkey flagged for
//! signing, else the primary key. RPM header signatures, `repomd.xml.asc` and
//! `CONTENTS.json.asc` therefore carry the same key id.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, Password};

/// The secret key (or subkey) that signs.
#[derive(Clone)]
enum Which {
    Primary,
    Subkey(usize),
}

/// A loaded, unlocked-on-use signing key.
#[derive(Clone)]
pub struct SigningKey {
    armored: String,
    secret: SignedSecretKey,
    which: Which,
    passphrase: Option<String>,
    origin: PathBuf,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("origin", &self.origin)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// Reads a passphrase file: its first line, without the line ending.
pub fn read_passphrase_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing passphrase file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

impl SigningKey {
    /// Loads the armored secret key at `path`, with the passphrase of `passphrase_file`, and
    /// checks that it can sign (a wrong or missing passphrase fails here, naming the file).
    pub fn load(path: &Path, passphrase_file: Option<&Path>) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let passphrase = passphrase_file.map(read_passphrase_file).transpose()?;
        Self::from_armored(&text, passphrase, path)
    }

    /// Parses an armored secret key; `origin` names it in errors.
    pub fn from_armored(text: &str, passphrase: Option<String>, origin: &Path) -> Result<Self> {
        let what = origin.display();
        let (secret, _) = SignedSecretKey::from_string(text)
            .map_err(|e| anyhow!("{what}: not an armored OpenPGP secret key: {e}"))?;
        secret
            .verify_bindings()
            .map_err(|e| anyhow!("{what}: the key's self-signatures do not verify: {e}"))?;
        let which = secret
            .secret_subkeys
            .iter()
            .position(|sk| sk.signatures.iter().any(|s| s.key_flags().sign()))
            .map(Which::Subkey)
            .unwrap_or(Which::Primary);
        let key = SigningKey {
            armored: text.to_string(),
            secret,
            which,
            passphrase,
            origin: origin.to_path_buf(),
        };
        key.sign_detached(b"", 0).map_err(|e| {
            anyhow!(
                "{what}: cannot sign with key {} ({e:#}); is BUILDCHAIN_SIGNING_PASSPHRASE_FILE \
                 set to the right passphrase?",
                key.key_id()
            )
        })?;
        Ok(key)
    }

    /// The file the key was read from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Key id of the signing (sub)key: 16 upper-case hex digits, as `rpm -K` prints it.
    pub fn key_id(&self) -> String {
        let id = match self.which {
            Which::Primary => self.secret.primary_key.legacy_key_id(),
            Which::Subkey(i) => self.secret.secret_subkeys[i].key.legacy_key_id(),
        };
        hex::encode_upper(id.as_ref())
    }

    /// The creation time of a signature made for a build at `build_time`: that time, or the
    /// signing key's creation time when the key is younger.
    pub fn signature_time(&self, build_time: u64) -> u64 {
        let created = match self.which {
            Which::Primary => self.secret.primary_key.created_at(),
            Which::Subkey(i) => self.secret.secret_subkeys[i].key.created_at(),
        };
        build_time.max(u64::from(created.as_secs()))
    }

    /// Fingerprint of the primary key (upper-case hex).
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.secret.primary_key.fingerprint().as_bytes())
    }

    /// The armored public key (transferable public key, all subkeys), to ship as
    /// `RPM-GPG-KEY-<project>`.
    pub fn public_key_armored(&self) -> Result<Vec<u8>> {
        self.secret
            .to_public_key()
            .to_armored_bytes(ArmorOptions::default())
            .map_err(|e| anyhow!("cannot export the public key of {}: {e}", self.key_id()))
    }

    fn password(&self) -> Password {
        match &self.passphrase {
            Some(p) => Password::from(p.as_str()),
            None => Password::empty(),
        }
    }

    /// A detached, armored, binary-mode signature of `data` for a build at `build_time` (see
    /// [`Self::signature_time`]).
    pub fn sign_detached(&self, data: &[u8], build_time: u64) -> Result<Vec<u8>> {
        let created =
            u32::try_from(self.signature_time(build_time)).context("signature time beyond 2106")?;
        let sig = match self.which {
            Which::Primary => self.sign_with(&self.secret.primary_key, data, created)?,
            Which::Subkey(i) => {
                self.sign_with(&self.secret.secret_subkeys[i].key, data, created)?
            }
        };
        sig.to_armored_bytes(ArmorOptions::default())
            .map_err(|e| anyhow!("cannot armor a signature: {e}"))
    }

    fn sign_with<K>(&self, key: &K, data: &[u8], created: u32) -> Result<DetachedSignature>
    where
        K: pgp::types::SigningKey + KeyDetails,
    {
        let mut cfg = SignatureConfig::v4(
            SignatureType::Binary,
            key.algorithm(),
            HashAlgorithm::Sha256,
        );
        let sub = |d| Subpacket::regular(d).map_err(|e| anyhow!("signature subpacket: {e}"));
        cfg.hashed_subpackets = vec![
            sub(SubpacketData::SignatureCreationTime(
                pgp::types::Timestamp::from_secs(created),
            ))?,
            sub(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
            sub(SubpacketData::IssuerKeyId(key.legacy_key_id()))?,
        ];
        let sig = cfg
            .sign(key, &self.password(), data)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(DetachedSignature::new(sig))
    }

    /// The `rpm` crate signer for the same key and passphrase.
    pub fn rpm_signer(&self) -> Result<rpm::signature::pgp::Signer> {
        let s = rpm::signature::pgp::Signer::from_asc(&self.armored)
            .map_err(|e| anyhow!("{}: rpm signer: {e}", self.origin.display()))?;
        Ok(match &self.passphrase {
            Some(p) => s.with_key_passphrase(p.clone()),
            None => s,
        })
    }
}

/// Signs `data` into `<path>.asc` next to it (atomically), or removes a stale `.asc` when
/// `key` is `None`. Returns the signature path when one was written.
pub fn write_detached(
    key: Option<&SigningKey>,
    signed_file: &Path,
    data: &[u8],
    created: u64,
) -> Result<Option<PathBuf>> {
    let mut asc = signed_file.as_os_str().to_owned();
    asc.push(".asc");
    let asc = PathBuf::from(asc);
    match key {
        Some(k) => {
            let sig = k
                .sign_detached(data, created)
                .with_context(|| format!("cannot sign {}", signed_file.display()))?;
            crate::fsutil::write_if_changed(&asc, &sig, Some(0o644))?;
            Ok(Some(asc))
        }
        None => {
            match std::fs::remove_file(&asc) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("cannot remove stale {}: {e}", asc.display()),
            }
            Ok(None)
        }
    }
}

/// `<fingerprint>` of the build's key, or `unsigned`: a value input of every signed output, and
/// what the build says about itself.
pub fn describe(key: Option<&SigningKey>) -> String {
    match key {
        Some(k) => k.fingerprint(),
        None => "unsigned".to_string(),
    }
}
