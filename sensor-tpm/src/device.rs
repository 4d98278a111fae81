//! The TPM side: one tss-esapi `Context` and the commands the anchor needs. Only the worker
//! thread touches it, so commands never interleave.

use std::str::FromStr;

use tss_esapi::attributes::{NvIndexAttributesBuilder, ObjectAttributesBuilder};
use tss_esapi::constants::{NvIndexType, Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::handles::{
    KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, PersistentTpmHandle,
    TpmHandle,
};
use tss_esapi::interface_types::algorithm::{
    EccSchemeAlgorithm, HashingAlgorithm, PublicAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, Digest, DigestValues, EccPoint, EccScheme, KeyDerivationFunctionScheme, NvPublicBuilder,
    PcrSelectionList, PcrSelectionListBuilder, PcrSlot, PublicBuilder, PublicEccParametersBuilder,
    Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, TctiNameConf};

use crate::attest::{self, AkPublic, ClockInfo, Quote};
use crate::config::TpmConfig;
use crate::error::{Error, Result};

/// What connecting found or had to create; the agent logs it once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmInfo {
    pub tcti: String,
    pub pcr: u32,
    pub nv_index: u32,
    pub ak_handle: u32,
    /// The AK was created and persisted by this connection (first start on this TPM).
    pub ak_created: bool,
    /// The NV counter was defined by this connection (first start on this TPM).
    pub counter_defined: bool,
    /// The key at `ak_handle` is not the attestation key this TPM derives from its
    /// endorsement seed (someone replaced it, e.g. with an owner-hierarchy key whose quotes
    /// they can shape): why. The connection quotes with the derived key instead.
    pub ak_replaced: Option<String>,
    pub ak_public: AkPublic,
}

fn tpm_err(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> Error {
    move |e| Error::Tpm {
        op,
        detail: describe(&e),
    }
}

/// tss-esapi prints "response code not recognized" for transport errors; add the raw code
/// and its TSS layer so an operator can tell "TPM refused" from "TPM unreachable".
fn describe(e: &tss_esapi::Error) -> String {
    let raw = match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return e.to_string(),
    };
    // Both print "Response code value: 0x...".
    let code = raw
        .rsplit("0x")
        .next()
        .and_then(|h| u32::from_str_radix(h.trim(), 16).ok());
    let layer = match code.map(|c| (c >> 16) & 0xff) {
        Some(0) => "TPM",
        Some(6) => "SYS",
        Some(7) => "ESYS",
        Some(10) => "TCTI: TPM unreachable",
        Some(11) => "resource manager",
        _ => "TSS",
    };
    match code {
        Some(c) => format!("{e} (rc {c:#010x}, {layer})"),
        None => format!("{e} ({raw})"),
    }
}

/// True when the TPM answered that the handle does not exist (as opposed to a transport
/// failure, which must not be mistaken for "absent" and lead to re-creation).
fn is_absent(e: &tss_esapi::Error) -> bool {
    matches!(
        e,
        tss_esapi::Error::Tss2Error(rc @ Tss2ResponseCode::FormatOne(_))
            if rc.kind() == Some(Tss2ResponseCodeKind::Handle)
    )
}

/// All commands use a plain password session with the empty auth value: the PCR, the
/// counter and the AK have no secret, and an HMAC session would cost two extra TPM
/// commands (StartAuthSession, FlushContext) per call. Nothing trusts a response because of
/// the session anyway: verifiers trust the AK's signature over the quote.
pub(crate) struct Connection {
    ctx: Context,
    ak: KeyHandle,
    /// `ak` is a transient object of this connection (the persisted key was replaced): it is
    /// flushed when the connection ends, so reconnects never fill the TPM's object slots.
    ak_transient: bool,
    nv: NvIndexHandle,
    pcr: u32,
    pub(crate) info: TpmInfo,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.ak_transient {
            // A TPM that is gone frees it at its next reset anyway.
            let _ = self.ctx.flush_context(ObjectHandle::from(self.ak));
        }
    }
}

impl Connection {
    pub(crate) fn open(cfg: &TpmConfig, tcti: &str) -> Result<Connection> {
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| Error::Config(format!("tcti {tcti:?}: {e}")))?;
        let mut ctx = Context::new(conf).map_err(tpm_err("connect"))?;
        let ak = if cfg.provision {
            derived_ak(&mut ctx, cfg.ak_handle)?
        } else {
            persisted_ak(&mut ctx, cfg.ak_handle)?
        };
        let (nv, counter_defined) = counter(&mut ctx, cfg.nv_index, cfg.provision)?;
        Ok(Connection {
            ctx,
            ak: ak.handle,
            ak_transient: ak.transient,
            nv,
            pcr: cfg.pcr,
            info: TpmInfo {
                tcti: tcti.to_string(),
                pcr: cfg.pcr,
                nv_index: cfg.nv_index,
                ak_handle: cfg.ak_handle,
                ak_created: ak.created,
                counter_defined,
                ak_replaced: ak.replaced,
                ak_public: ak.public,
            },
        })
    }

    fn selection(&self) -> Result<PcrSelectionList> {
        let slot = PcrSlot::try_from(1u32 << self.pcr).map_err(tpm_err("pcr selection"))?;
        PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &[slot])
            .build()
            .map_err(tpm_err("pcr selection"))
    }

    pub(crate) fn extend(&mut self, digest: [u8; 32]) -> Result<()> {
        let handle = PcrHandle::try_from(self.pcr).map_err(tpm_err("pcr handle"))?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(tpm_err("extend"))?,
        );
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.pcr_extend(handle, values)
            })
            .map_err(tpm_err("extend"))
    }

    pub(crate) fn pcr_read(&mut self) -> Result<[u8; 32]> {
        let selection = self.selection()?;
        let (_, _, values) = self
            .ctx
            .execute_without_session(|ctx| ctx.pcr_read(selection))
            .map_err(tpm_err("pcr_read"))?;
        match values.value() {
            [v] => v
                .value()
                .try_into()
                .map_err(|_| Error::Unexpected(format!("PCR value of {} bytes", v.len()))),
            other => Err(Error::Unexpected(format!(
                "{} PCR values for one selected PCR (is the SHA-256 bank allocated?)",
                other.len()
            ))),
        }
    }

    pub(crate) fn advance_counter(&mut self) -> Result<u64> {
        let nv = self.nv;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.nv_increment(NvAuth::NvIndex(nv), nv)
            })
            .map_err(tpm_err("nv_increment"))?;
        self.read_counter()
    }

    pub(crate) fn read_counter(&mut self) -> Result<u64> {
        let nv = self.nv;
        let data = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.nv_read(NvAuth::NvIndex(nv), nv, 8, 0)
            })
            .map_err(tpm_err("nv_read"))?;
        let bytes: [u8; 8] = data
            .value()
            .try_into()
            .map_err(|_| Error::Unexpected(format!("counter of {} bytes", data.len())))?;
        Ok(u64::from_be_bytes(bytes))
    }

    pub(crate) fn quote(&mut self, qualifying_data: [u8; 32]) -> Result<Quote> {
        let selection = self.selection()?;
        let ak = self.ak;
        let data = Data::try_from(qualifying_data.to_vec()).map_err(tpm_err("quote"))?;
        let (attest, signature) = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(ak, data, SignatureScheme::Null, selection)
            })
            .map_err(tpm_err("quote"))?;
        let attest = attest.marshall().map_err(tpm_err("marshal attest"))?;
        let signature = match signature {
            Signature::EcDsa(sig) => {
                let mut rs = [0; 64];
                rs[..32].copy_from_slice(&attest::pad32(sig.signature_r().value(), "r")?);
                rs[32..].copy_from_slice(&attest::pad32(sig.signature_s().value(), "s")?);
                rs
            }
            other => {
                return Err(Error::Unexpected(format!(
                    "quote signed with {:?}, expected ECDSA",
                    other.algorithm()
                )))
            }
        };
        // Same worker turn as the quote, so this worker extended nothing in between; another
        // process may have (the agent, when `sensorctl verify` quotes), so a verifier takes
        // the quoted value from the digest (`LogAnchorState::quoted_pcr`), never from here.
        let pcr_value = self.pcr_read()?;
        Ok(Quote {
            attest,
            signature,
            pcr_index: self.pcr,
            pcr_value,
            ak_public: self.info.ak_public.clone(),
        })
    }

    /// TPM2_ReadClock is missing from tss-esapi 7.x, so the counts come from a quote's
    /// clockInfo. They are in clear only because the AK is in the endorsement hierarchy.
    pub(crate) fn clock_info(&mut self) -> Result<ClockInfo> {
        let quote = self.quote([0; 32])?;
        Ok(attest::parse_attest(&quote.attest)?.clock)
    }
}

/// The AK template: restricted ECDSA P-256/SHA-256 signing key, fixed to this TPM. As an
/// endorsement-hierarchy *primary* it is derived from the endorsement seed, so re-creating it
/// with the same template yields the same key (until the TPM is cleared) and no private
/// blob ever touches the disk.
fn ak_template() -> Result<tss_esapi::structures::Public> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .build()
        .map_err(tpm_err("AK template"))?;
    let params = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(
            EccScheme::create(
                EccSchemeAlgorithm::EcDsa,
                Some(HashingAlgorithm::Sha256),
                None,
            )
            .map_err(tpm_err("AK template"))?,
        )
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .build()
        .map_err(tpm_err("AK template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tpm_err("AK template"))
}

/// The attestation key a connection quotes with.
struct Ak {
    handle: KeyHandle,
    public: AkPublic,
    created: bool,
    transient: bool,
    replaced: Option<String>,
}

/// The agent's AK: derived from the endorsement seed with `ak_template` (the same key every
/// time), persisted at `handle` on first start, and compared with what sits there on every
/// other start. Deriving it is what proves the hierarchy and the template: a key someone else
/// persisted at the handle (another template, the owner hierarchy, an imported key) differs,
/// is reported in `replaced` and is not used.
fn derived_ak(ctx: &mut Context, handle: u32) -> Result<Ak> {
    let tpm_handle = PersistentTpmHandle::new(handle).map_err(|e| Error::Config(e.to_string()))?;
    let template = ak_template()?;
    let primary = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
        })
        .map_err(tpm_err("derive AK"))?;
    let transient = ObjectHandle::from(primary.key_handle);
    let public = AkPublic {
        public_area: primary
            .out_public
            .marshall()
            .map_err(tpm_err("marshal AK"))?,
    };
    let persisted = match ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)))
    {
        Ok(object) => Some(object),
        Err(e) if is_absent(&e) => None,
        Err(e) => {
            let _ = ctx.flush_context(transient);
            return Err(tpm_err("find AK")(e));
        }
    };
    let Some(object) = persisted else {
        let persisted = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(
                    Provision::Owner,
                    transient,
                    Persistent::Persistent(tpm_handle),
                )
            })
            .map_err(tpm_err("persist AK"));
        // The transient copy is not needed either way; a failed flush only wastes a slot
        // until the TPM resets.
        let _ = ctx.flush_context(transient);
        return Ok(Ak {
            handle: KeyHandle::from(persisted?),
            public,
            created: true,
            transient: false,
            replaced: None,
        });
    };
    let at_handle = read_public(ctx, KeyHandle::from(object));
    match at_handle {
        Ok(found) if found == public => {
            let _ = ctx.flush_context(transient);
            Ok(Ak {
                handle: KeyHandle::from(object),
                public,
                created: false,
                transient: false,
                replaced: None,
            })
        }
        other => Ok(Ak {
            handle: KeyHandle::from(transient),
            public,
            created: false,
            transient: true,
            replaced: Some(match other {
                Ok(found) => format!(
                    "the key persisted at {handle:#010x} is not the attestation key this TPM derives from its endorsement seed (replaced{})",
                    found.sec1_point().err().map_or(String::new(), |e| format!("; {e}"))
                ),
                Err(e) => format!("the object at {handle:#010x} cannot be read ({e})"),
            }),
        }),
    }
}

/// A verifier's AK: whatever is persisted at `handle`, created by nothing (a verifier changes
/// nothing on the TPM). It then compares the key with the one the log pinned.
fn persisted_ak(ctx: &mut Context, handle: u32) -> Result<Ak> {
    let tpm_handle = PersistentTpmHandle::new(handle).map_err(|e| Error::Config(e.to_string()))?;
    let object = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)))
        .map_err(|e| {
            if is_absent(&e) {
                Error::HandleConflict {
                    handle,
                    reason:
                        "no attestation key is persisted there (evicted, or the TPM was cleared)"
                            .into(),
                }
            } else {
                tpm_err("find AK")(e)
            }
        })?;
    let key = KeyHandle::from(object);
    let public = read_public(ctx, key)?;
    public.sec1_point()?;
    Ok(Ak {
        handle: key,
        public,
        created: false,
        transient: false,
        replaced: None,
    })
}

fn read_public(ctx: &mut Context, key: KeyHandle) -> Result<AkPublic> {
    let (public, _, _) = ctx
        .execute_without_session(|c| c.read_public(key))
        .map_err(tpm_err("read AK"))?;
    Ok(AkPublic {
        public_area: public.marshall().map_err(tpm_err("marshal AK"))?,
    })
}

/// A plain (not orderly) counter: an orderly one jumps forward by up to 255 after an
/// unorderly TPM shutdown, which would hide a rollback of that many advances; at one
/// advance per `nv_interval` the NV wear of a plain one is negligible (docs/tpm.md).
fn counter_attributes() -> Result<tss_esapi::attributes::NvIndexAttributes> {
    NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Counter)
        .with_auth_write(true)
        .with_auth_read(true)
        .with_owner_read(true)
        .with_no_da(true)
        .build()
        .map_err(tpm_err("NV attributes"))
}

/// Finds the NV counter, or (when `provision`) defines it and gives it its first value: a
/// counter cannot be read before its first increment, and a new counter starts at the
/// highest value any counter on this TPM ever had, so redefining never goes back.
fn counter(ctx: &mut Context, index: u32, provision: bool) -> Result<(NvIndexHandle, bool)> {
    let tpm_handle = NvIndexTpmHandle::new(index).map_err(|e| Error::Config(e.to_string()))?;
    match ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle))) {
        Ok(object) => {
            let nv = NvIndexHandle::from(object);
            let (public, _) = ctx
                .execute_without_session(|c| c.nv_read_public(nv))
                .map_err(tpm_err("read NV public"))?;
            let attrs = public.attributes();
            if attrs.index_type().ok() != Some(NvIndexType::Counter) || !attrs.auth_write() {
                return Err(Error::HandleConflict {
                    handle: index,
                    reason: format!("NV index is not our counter (attributes {attrs:?})"),
                });
            }
            if !attrs.written() && provision {
                // Defined by a start that died before its first increment.
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_increment(NvAuth::NvIndex(nv), nv)
                })
                .map_err(tpm_err("nv_increment"))?;
            }
            Ok((nv, false))
        }
        Err(e) if is_absent(&e) && !provision => Err(Error::HandleConflict {
            handle: index,
            reason: "no NV counter is defined there (undefined, or the TPM was cleared)".into(),
        }),
        Err(e) if is_absent(&e) => {
            let public = NvPublicBuilder::new()
                .with_nv_index(tpm_handle)
                .with_index_name_algorithm(HashingAlgorithm::Sha256)
                .with_index_attributes(counter_attributes()?)
                .with_data_area_size(8)
                .build()
                .map_err(tpm_err("NV public"))?;
            let nv = ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_define_space(Provision::Owner, None, public)
                })
                .map_err(tpm_err("define NV counter"))?;
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_increment(NvAuth::NvIndex(nv), nv)
            })
            .map_err(tpm_err("nv_increment"))?;
            Ok((nv, true))
        }
        Err(e) => Err(tpm_err("find NV counter")(e)),
    }
}
