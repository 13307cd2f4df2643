//! The shared-secret check: `?token=…` (the vendor lets users paste only a URL) or
//! `Authorization: Bearer …`, compared in constant time.

use actix_web::http::header::{HeaderMap, HeaderValue};
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured secret, kept as a digest: comparing digests of equal length in constant
/// time says nothing about the secret's length or content through timing.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Self {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        self.0.ct_eq(&digest).into()
    }

    /// Whether the request carries the secret in its query or its `Authorization` header.
    /// One guess a request: several `token` parameters, several `Authorization` headers, or
    /// one of each, are refused without trying any, so that one request cannot try more.
    pub fn admits(&self, req: &HttpRequest) -> bool {
        self.admits_parts(req.headers(), req.query_string())
    }

    /// [`Token::admits`] on a request's headers and query string.
    pub fn admits_parts(&self, headers: &HeaderMap, query_string: &str) -> bool {
        let query: Vec<_> = form_urlencoded::parse(query_string.as_bytes())
            .filter(|(k, _)| k == "token")
            .map(|(_, v)| v)
            .collect();
        let headers: Vec<_> = headers
            .get_all(actix_web::http::header::AUTHORIZATION)
            .collect();
        if query.len() + headers.len() > 1 {
            return false;
        }
        let from_query = query.first().is_some_and(|v| self.matches(v));
        let from_header = (headers.first())
            .and_then(|v| bearer(v))
            .is_some_and(|t| self.matches(t));
        // Both are checked, whatever the first says, to keep the time the same.
        from_query | from_header
    }
}

/// The credential of an `Authorization: Bearer …` header (the scheme in any case).
pub(crate) fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, rest) = value.to_str().ok()?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}
