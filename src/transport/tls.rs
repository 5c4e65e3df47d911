//! TLS (rustls with the `ring` provider): loading the `[tls]` files into server and client
//! configurations, and the per-target connection figures.
//!
//! [`load`] reads the certificate, key and CA files the rules name and reports every problem at the
//! position of its key, like any other rules error: an unreadable or unparsable file, a key that
//! does not match the certificate, no usable CA. A certificate that expires within 30 days (or has
//! expired) is a warning. The result, [`TlsMaterial`], is swapped into the running transport on
//! reload; connections already up keep the configuration they were made with.

use crate::config::{ClientAuth, Diagnostic, FileRef, Pos, Severity, TlsSpec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate expiring within this is warned about by `check` and on every (re)load.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The loaded `[tls]` files: what the TLS listener presents and how targets are checked.
#[derive(Clone)]
pub struct TlsMaterial {
    /// None when no certificate is configured (then there is no TLS listener).
    pub(super) server: Option<Arc<ServerConfig>>,
    pub(super) client: Arc<ClientConfig>,
    pub(super) handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("server", &self.server.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl TlsMaterial {
    pub fn has_server_certificate(&self) -> bool {
        self.server.is_some()
    }
}

/// Collects diagnostics about the files, positioned at their keys.
struct Report<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
}

impl Report<'_> {
    fn push(&mut self, pos: Pos, severity: Severity, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            severity,
            message,
        });
    }
    fn error(&mut self, pos: Pos, message: String) {
        self.push(pos, Severity::Error, message);
    }
}

/// Where a path written in the rules file points: relative paths are relative to the rules file.
pub fn resolve(rules_file: &str, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match Path::new(rules_file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every file of `spec`. Ok: the material and any warnings (expiry). Err: every diagnostic.
/// `rules_file` is the rules file's path as given (for relative paths and messages).
pub fn load(
    spec: &TlsSpec,
    rules_file: &str,
) -> Result<(TlsMaterial, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut r = Report {
        file: rules_file,
        diags: Vec::new(),
    };
    let certs = spec
        .cert_file
        .as_ref()
        .and_then(|f| certificates(&mut r, rules_file, f));
    let key = spec
        .key_file
        .as_ref()
        .and_then(|f| private_key(&mut r, rules_file, f));
    let cas = spec
        .ca_file
        .as_ref()
        .and_then(|f| certificates(&mut r, rules_file, f));
    let provider = provider();
    let mut roots = RootCertStore::empty();
    if let (Some(cas), Some(f)) = (&cas, &spec.ca_file) {
        for (i, ca) in cas.iter().enumerate() {
            if let Err(e) = roots.add(ca.clone()) {
                r.error(
                    f.pos,
                    format!("{}: certificate {} is not a usable CA: {e}", f.path, i + 1),
                );
            }
        }
    }
    // Our certificate and key, checked to belong together.
    let ours = match (certs, key, &spec.cert_file, &spec.key_file) {
        (Some(certs), Some(key), Some(cf), Some(kf)) => {
            match provider.key_provider.load_private_key(key.clone_key()) {
                Ok(signing) => {
                    let ck = rustls::sign::CertifiedKey::new(certs.clone(), signing);
                    match ck.keys_match() {
                        Ok(()) => Some((certs, key)),
                        // A key type whose public key cannot be derived here: cannot tell, allow.
                        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                            Some((certs, key))
                        }
                        Err(_) => {
                            r.error(
                                kf.pos,
                                format!(
                                    "{}: this private key does not match the certificate in {}",
                                    kf.path, cf.path
                                ),
                            );
                            None
                        }
                    }
                }
                Err(e) => {
                    r.error(kf.pos, format!("{}: unusable private key: {e}", kf.path));
                    None
                }
            }
        }
        _ => None,
    };
    if r.diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(r.diags);
    }
    let roots = Arc::new(roots);
    let server = match &ours {
        Some((certs, key)) => {
            match server_config(spec, provider.clone(), roots.clone(), certs, key) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    let pos = spec.cert_file.as_ref().map_or(spec.pos, |f| f.pos);
                    r.error(
                        pos,
                        format!("cannot build the TLS server configuration: {e}"),
                    );
                    return Err(r.diags);
                }
            }
        }
        None => None,
    };
    let client = match client_config(provider, roots, ours.as_ref()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            r.error(
                spec.pos,
                format!("cannot build the TLS client configuration: {e}"),
            );
            return Err(r.diags);
        }
    };
    Ok((
        TlsMaterial {
            server,
            client,
            handshake_timeout: Duration::from_millis(spec.handshake_timeout_ms),
        },
        r.diags,
    ))
}

fn server_config(
    spec: &TlsSpec,
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<RootCertStore>,
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier = |b: rustls::server::ClientCertVerifierBuilder| {
        b.build()
            .map_err(|e| rustls::Error::General(format!("client certificate verifier: {e}")))
    };
    let builder = match spec.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Request => builder.with_client_cert_verifier(verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated(),
        )?),
        ClientAuth::Require => builder.with_client_cert_verifier(verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider),
        )?),
    };
    builder.with_single_cert(certs.to_vec(), key.clone_key())
}

fn client_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<RootCertStore>,
    ours: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    // Our certificate doubles as the client certificate toward PSAPs that ask for one (mutual TLS).
    match ours {
        Some((certs, key)) => builder.with_client_auth_cert(certs.clone(), key.clone_key()),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn certificates(
    r: &mut Report<'_>,
    rules_file: &str,
    f: &FileRef,
) -> Option<Vec<CertificateDer<'static>>> {
    let path = resolve(rules_file, &f.path);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            r.error(f.pos, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => {
            for (i, cert) in c.iter().enumerate() {
                expiry(r, f, i, cert);
            }
            Some(c)
        }
        Ok(_) => {
            r.error(
                f.pos,
                format!("{}: no PEM CERTIFICATE block found", path.display()),
            );
            None
        }
        Err(e) => {
            r.error(f.pos, format!("{}: bad PEM: {e}", path.display()));
            None
        }
    }
}

fn private_key(
    r: &mut Report<'_>,
    rules_file: &str,
    f: &FileRef,
) -> Option<PrivateKeyDer<'static>> {
    let path = resolve(rules_file, &f.path);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            r.error(f.pos, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Some(k),
        Err(e) => {
            r.error(
                f.pos,
                format!(
                    "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Parses one certificate and warns when it is expired or expires within [`EXPIRY_WARNING`];
/// an unparsable certificate is an error.
fn expiry(r: &mut Report<'_>, f: &FileRef, index: usize, cert: &CertificateDer<'_>) {
    let which = format!("{} (certificate {})", f.path, index + 1);
    let parsed = match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => {
            r.error(f.pos, format!("{which}: not an X.509 certificate: {e}"));
            return;
        }
    };
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let subject = parsed.subject().to_string();
    if not_after <= now {
        r.push(
            f.pos,
            Severity::Warning,
            format!("{which} ({subject}) has EXPIRED: peers will refuse it; replace it and reload"),
        );
    } else if not_after - now <= EXPIRY_WARNING.as_secs() as i64 {
        let days = (not_after - now) / 86_400;
        r.push(
            f.pos,
            Severity::Warning,
            format!("{which} ({subject}) expires in {days} days: renew it"),
        );
    }
}

/// The name a target's certificate must carry (its `tls_name`, else its IP address).
fn server_name(name: Option<&str>, addr: std::net::SocketAddr) -> ServerName<'static> {
    name.and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// Opens a TLS client session to a target over `stream` with the `[tls]` trust and client
/// certificate, checking the name `name` (its `tls_name`, else its IP address), within the
/// handshake timeout. The transport's outbound connections and test calls both open theirs here.
pub async fn connect_client(
    material: &TlsMaterial,
    name: Option<&str>,
    stream: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let to = stream.peer_addr()?;
    let connector = tokio_rustls::TlsConnector::from(material.client.clone());
    let timeout = material.handshake_timeout;
    match tokio::time::timeout(timeout, connector.connect(server_name(name, to), stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("handshake not finished in {} ms", timeout.as_millis()),
        )),
    }
}

/// TLS connection figures of one target address (what `/status` and `/metrics` show).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFigures {
    /// TLS connections to the target open now.
    pub connections: u64,
    /// Handshakes completed since start.
    pub handshakes: u64,
    /// Handshakes that failed (refused or reset connection, timeout, certificate refused).
    pub handshake_failures: u64,
    /// Why the last handshake failed; cleared by the next completed one.
    pub last_failure: Option<String>,
}

/// The counters behind [`TlsFigures`], per target address.
#[derive(Default)]
pub(super) struct LinkStats {
    open: AtomicU64,
    handshakes: AtomicU64,
    failures: AtomicU64,
    /// The last failure reason; also what was last logged (a reason is logged once per target
    /// until a handshake completes or the reason changes).
    last_failure: std::sync::Mutex<Option<String>>,
}

impl LinkStats {
    /// Counts a completed handshake; true when the one before had failed.
    pub(super) fn opened(&self) -> bool {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        last.take().is_some()
    }
    pub(super) fn closed(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
    /// Counts a failed handshake; true when this reason was not the last one logged.
    pub(super) fn failed(&self, reason: &str) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(reason) {
            return false;
        }
        *last = Some(reason.to_string());
        true
    }
    pub(super) fn figures(&self) -> TlsFigures {
        TlsFigures {
            connections: self.open.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            handshake_failures: self.failures.load(Ordering::Relaxed),
            last_failure: self
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientAuth, FileRef, Pos, TlsSpec};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("sosrouter-tls-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        fn write(&self, name: &str, text: &str) -> String {
            let p = self.dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// (cert PEM, key PEM) of a leaf for `name` expiring `days` from now.
    fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str, days: i64) -> (String, String) {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(400);
        p.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        (p.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
    }

    fn spec(cert: &str, key: &str, ca: &str) -> TlsSpec {
        let at = |line| FileRef {
            path: String::new(),
            pos: Pos { line, column: 1 },
        };
        let with = |line, path: &str| {
            Some(FileRef {
                path: path.to_string(),
                ..at(line)
            })
        };
        TlsSpec {
            cert_file: with(3, cert),
            key_file: with(4, key),
            ca_file: with(5, ca),
            client_auth: ClientAuth::None,
            client_auth_pos: Pos { line: 6, column: 1 },
            handshake_timeout_ms: 2000,
            pos: Pos { line: 2, column: 1 },
        }
    }

    #[test]
    fn good_files_load_and_a_certificate_expiring_soon_is_a_warning() {
        let f = Files::new("good");
        let ca = ca();
        let (c, k) = leaf(&ca, "sosrouter.lab", 10);
        let s = spec(
            &f.write("p.crt", &c),
            &f.write("p.key", &k),
            &f.write("ca.crt", &ca.pem()),
        );
        let (m, warnings) = load(&s, "rules.toml").unwrap();
        assert!(m.has_server_certificate());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            (warnings[0].line, warnings[0].severity),
            (3, Severity::Warning)
        );
        assert!(
            warnings[0].message.contains("expires in 9 days")
                || warnings[0].message.contains("expires in 10 days"),
            "{}",
            warnings[0]
        );

        let (c, k) = leaf(&ca, "sosrouter.lab", 365);
        let s = spec(
            &f.write("p.crt", &c),
            &f.write("p.key", &k),
            &f.write("ca.crt", &ca.pem()),
        );
        assert!(load(&s, "rules.toml").unwrap().1.is_empty());

        let (c, k) = leaf(&ca, "sosrouter.lab", -1);
        let s = spec(
            &f.write("p.crt", &c),
            &f.write("p.key", &k),
            &f.write("ca.crt", &ca.pem()),
        );
        let (_, w) = load(&s, "rules.toml").unwrap();
        assert!(w[0].message.contains("EXPIRED"), "{}", w[0]);
    }

    #[test]
    fn a_key_of_another_certificate_and_unreadable_files_are_errors_at_their_keys() {
        let f = Files::new("bad");
        let ca = ca();
        let (c, _) = leaf(&ca, "sosrouter.lab", 365);
        let (_, other_key) = leaf(&ca, "other.lab", 365);
        let s = spec(
            &f.write("p.crt", &c),
            &f.write("p.key", &other_key),
            &f.write("ca.crt", &ca.pem()),
        );
        let errs = load(&s, "rules.toml").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 4);
        assert!(
            errs[0].message.contains("does not match the certificate"),
            "{}",
            errs[0]
        );

        let missing = f.dir.join("nope.crt").display().to_string();
        let s = spec(
            &missing,
            &f.write("g.key", "garbage"),
            &f.write("ca.crt", "no pem here"),
        );
        let errs = load(&s, "rules.toml").unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![3, 4, 5], "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with("rules.toml:3:1: error: cannot read"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn relative_paths_are_relative_to_the_rules_file() {
        assert_eq!(
            resolve("/etc/sosrouter/rules.toml", "certs/a.crt"),
            PathBuf::from("/etc/sosrouter/certs/a.crt")
        );
        assert_eq!(
            resolve("rules.toml", "certs/a.crt"),
            PathBuf::from("certs/a.crt")
        );
        assert_eq!(
            resolve("/etc/x/rules.toml", "/abs/a.crt"),
            PathBuf::from("/abs/a.crt")
        );
    }
}
