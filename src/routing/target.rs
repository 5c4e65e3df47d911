//! The Request-URI sent to each target.

use super::{Target, TargetKind};

pub(super) fn request_uri_for(target: &Target, original: &[u8]) -> Vec<u8> {
    let original = original.trim_ascii();
    if let TargetKind::Tel { number, .. } = &target.kind {
        return format!("tel:{number}").into_bytes();
    }
    // The service URN is what tells the PSAP this is an emergency call (RFC 5031): never replace it.
    if original.len() >= 4 && original[..4].eq_ignore_ascii_case(b"urn:") {
        return original.to_vec();
    }
    let uri = target.uri.as_bytes();
    let (scheme, rest): (&[u8], &[u8]) = match uri.strip_prefix(b"sips:") {
        Some(rest) => (b"sips:", rest),
        None => (b"sip:", uri.strip_prefix(b"sip:").unwrap_or(uri)),
    };
    match original_user(original) {
        Some(user) if !rest.contains(&b'@') => [scheme, user, b"@", rest].concat(),
        _ => uri.to_vec(),
    }
}

/// The user part of a sip/sips Request-URI (user parameters kept), or a tel number.
fn original_user(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    let user = if scheme.eq_ignore_ascii_case(b"tel") {
        rest.split(|&b| b == b';').next()?
    } else if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        &rest[..rest.iter().position(|&b| b == b'@')?]
    } else {
        return None;
    };
    (!user.is_empty()).then_some(user)
}
