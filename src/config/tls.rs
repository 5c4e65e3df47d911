//! The optional `[tls]` section: our certificate and key (what we present to callers and, for
//! mutual authentication, to PSAPs), the CA we trust (PSAP certificates, and callers' certificates
//! when `client_auth` asks for them), and the handshake timeout.
//!
//! Only the paths are read here (this module does no IO); `transport::tls::load` reads the files
//! and reports their problems at the positions kept in [`TlsSpec`].

use super::walk::{Ctx, Pos, Span};
use toml::de::DeTable;

const KEYS: &[&str] = &[
    "cert_file",
    "key_file",
    "ca_file",
    "client_auth",
    "handshake_timeout_ms",
];

/// Defaults of the `[tls]` keys.
pub mod defaults {
    /// A TLS handshake not finished in 2 s fails (like the TCP connect timeout): the call fails over.
    pub const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
}

/// Whether callers must present a certificate signed by `ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Not asked for (default).
    #[default]
    None,
    /// Asked for, checked when given, a caller without one still admitted.
    Request,
    /// A caller without a valid certificate is refused at the handshake.
    Require,
}

/// A file path as written, with the position of its key (for diagnostics about the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    pub pos: Pos,
}

/// `[tls]`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// PEM certificate chain we present (leaf first). Relative paths are relative to the rules file.
    pub cert_file: Option<FileRef>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<FileRef>,
    /// PEM CA certificates we trust for PSAP certificates and callers' certificates.
    pub ca_file: Option<FileRef>,
    pub client_auth: ClientAuth,
    pub client_auth_pos: Pos,
    pub handshake_timeout_ms: u64,
    /// The section header.
    pub pos: Pos,
}

/// Reads `[tls]`; None when the section is absent.
pub(crate) fn read_tls(ctx: &mut Ctx, doc: &DeTable) -> Option<(TlsSpec, Span)> {
    let (t, span) = ctx.table(doc, "tls")?;
    ctx.check_keys(t, "in [tls]", KEYS);
    let mut file = |key: &str| {
        let (path, sp) = ctx.string(t, key)?;
        if path.trim().is_empty() {
            ctx.error(&sp, format!("`{key}` must not be empty"));
            return None;
        }
        Some(FileRef {
            path,
            pos: ctx.pos(sp.start),
        })
    };
    let (cert_file, key_file, ca_file) = (file("cert_file"), file("key_file"), file("ca_file"));
    let (client_auth, client_auth_pos) = match ctx.string(t, "client_auth") {
        Some((s, sp)) => {
            let v = match s.as_str() {
                "none" => ClientAuth::None,
                "request" => ClientAuth::Request,
                "require" => ClientAuth::Require,
                _ => {
                    ctx.error(
                        &sp,
                        format!("client_auth `{s}` is not \"none\", \"request\" or \"require\""),
                    );
                    ClientAuth::None
                }
            };
            (v, ctx.pos(sp.start))
        }
        None => (ClientAuth::None, ctx.pos(span.start)),
    };
    let handshake_timeout_ms = ctx
        .integer(t, "handshake_timeout_ms", 1, 60_000)
        .unwrap_or(defaults::HANDSHAKE_TIMEOUT_MS);
    if cert_file.is_some() != key_file.is_some() {
        ctx.error(
            &span,
            "[tls] needs both `cert_file` and `key_file`, or neither",
        );
    }
    if client_auth != ClientAuth::None && ca_file.is_none() {
        ctx.error(
            &span,
            "`client_auth` checks callers' certificates against `ca_file`: set `ca_file`",
        );
    }
    let pos = ctx.pos(span.start);
    Some((
        TlsSpec {
            cert_file,
            key_file,
            ca_file,
            client_auth,
            client_auth_pos,
            handshake_timeout_ms,
            pos,
        },
        span,
    ))
}

/// A target's `tls_name`: a DNS name (or an IP address) the PSAP's certificate must carry.
pub(crate) fn parse_tls_name(s: &str) -> Result<String, String> {
    match rustls::pki_types::ServerName::try_from(s) {
        Ok(_) => Ok(s.to_string()),
        Err(_) => Err(format!(
            "tls_name `{s}` is not a DNS name or IP address (e.g. \"psap-a.example.net\")"
        )),
    }
}
