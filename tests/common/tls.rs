//! TLS for the integration tests: a lab CA and certificates made in the test with `rcgen` (written
//! to the test's own directory, never committed), client and server configurations, and a fake
//! answering point over TLS that counts its completed handshakes and can be killed.

use super::{Behaviour, PSAP_LIMITS, Received, react};
use bytes::{Bytes, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sosrouter::sip::{Limits, Message, frame_len};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A PEM certificate (chain) and its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }

    pub fn certs(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

/// A lab certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/ca.crt`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join("ca.crt");
        std::fs::write(&p, self.pem()).unwrap();
        p
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, false)
    }

    /// A leaf certificate for `names` that expired in 2020.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, true)
    }

    fn leaf_valid(&self, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).unwrap();
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        if expired {
            p.not_before = date_time_ymd(2019, 1, 1);
            p.not_after = date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(self.issuer.der().clone()).unwrap();
        r
    }

    /// A client configuration trusting this CA, presenting `leaf` when given.
    pub fn client(&self, leaf: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        Arc::new(match leaf {
            Some(l) => b.with_client_auth_cert(l.certs(), l.key()).unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration presenting `leaf`, no client certificates asked for.
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(leaf.certs(), leaf.key())
            .unwrap(),
    )
}

/// A fake answering point over TLS on a loopback port: answers like [`super::Uas`], counts the
/// handshakes that completed, and can be killed (listener and every connection closed at once).
pub struct TlsUas {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    handshakes: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for TlsUas {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TlsUas {
    pub async fn start(leaf: &Leaf, b: Behaviour) -> TlsUas {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf));
        let (l2, h2, t2) = (log.clone(), handshakes.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log, handshakes) = (acceptor.clone(), l2.clone(), h2.clone());
                let conn = tokio::spawn(async move {
                    let Ok(s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    serve(s, addr, b, log).await;
                });
                t2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        TlsUas {
            addr,
            log,
            handshakes,
            tasks,
        }
    }

    /// TLS handshakes that completed with this answering point.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Stops at once: the listener closes and every connection is dropped (a crashed PSAP).
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// One TLS connection of the fake answering point: framed requests in, [`react`]'s answers out.
async fn serve(
    s: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    b: Behaviour,
    log: Arc<Mutex<Vec<Received>>>,
) {
    let (mut rd, mut wr) = tokio::io::split(s);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = async move {
        while let Some(m) = rx.recv().await {
            if wr.write_all(&m).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    let contact = format!("<sip:uas@{addr};transport=tls>");
    let reader = async move {
        let mut buf = BytesMut::new();
        loop {
            while let Ok(Some(n)) = frame_len(&buf, &Limits::default()) {
                let f = buf.split_to(n).freeze();
                if f.iter().all(|c| *c == b'\r' || *c == b'\n') {
                    if f.len() >= 4 {
                        let _ = tx.send(Bytes::from_static(b"\r\n"));
                    }
                    continue;
                }
                let Ok(msg) = Message::parse(f, &PSAP_LIMITS) else {
                    continue;
                };
                if !msg.is_request() {
                    continue;
                }
                let method =
                    String::from_utf8_lossy(msg.method_bytes().unwrap_or_default()).into_owned();
                let request_uri =
                    String::from_utf8_lossy(msg.request_uri().unwrap_or_default()).into_owned();
                log.lock().unwrap().push(Received {
                    method: method.clone(),
                    request_uri,
                    from: addr,
                    msg: msg.clone(),
                });
                for m in react(&msg, &method, b, &contact, &log) {
                    let _ = tx.send(m);
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::join!(writer, reader);
}
