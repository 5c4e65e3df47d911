//! URIs the proxy looks into: sip/sips, tel, urn (service URNs), IPv6 hosts.
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriScheme {
    Sip,
    Sips,
    Tel,
    Urn,
    Other,
}

/// A parsed view of a URI. Slices borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: UriScheme,
    /// sip: user part (before '@'), tel: the number, urn: the whole NSS (`service:sos.fire`).
    pub user: Option<&'a [u8]>,
    /// sip: host as written (IPv6 in brackets); None for tel/urn.
    pub host: Option<&'a [u8]>,
    pub port: Option<u16>,
    /// The `;params` section (without headers `?...`), for lookups with [`Uri::param`].
    pub params: &'a [u8],
    pub user_span: Option<Range<usize>>,
}

impl<'a> Uri<'a> {
    /// Parses a URI (no surrounding `<>`). Returns None when it is not a URI we can read.
    pub fn parse(_s: &'a [u8]) -> Option<Uri<'a>> {
        todo!()
    }
    /// A URI parameter's value (`;transport=tcp` -> Some(Some(b"tcp")), `;lr` -> Some(None)).
    pub fn param(&self, _name: &[u8]) -> Option<Option<&'a [u8]>> {
        todo!()
    }
}
